"""Conformance suites: every built-in destination and source through the same assertions.

``destinations.py`` and ``sources.py`` hold one adapter per connector (how to build it against its real
local service and how to read back what it did); the ``test_*_contract.py`` modules hold the assertions.
"""
