"""The native source contract (``base``), the bizon-source adapter, and record/incremental helpers."""
