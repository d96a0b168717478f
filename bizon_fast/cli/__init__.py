"""The ``bizon-fast`` command line (entry point ``bizon_fast.cli:main``)."""

from bizon_fast.cli.app import app, main

__all__ = ["app", "main"]
