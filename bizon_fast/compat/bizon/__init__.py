"""bizon's public source API for custom sources, reimplemented (no bizon code): see ``bizon_fast.compat``."""
