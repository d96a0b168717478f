"""``bizon.source.auth``: authentication config and the authenticators a source attaches to its session."""
