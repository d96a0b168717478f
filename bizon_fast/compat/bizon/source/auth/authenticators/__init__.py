"""``bizon.source.auth.authenticators``: token, basic, OAuth2 and cookie authenticators (requests ``AuthBase``)."""
