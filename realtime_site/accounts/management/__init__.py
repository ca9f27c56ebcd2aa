"""Management commands of the accounts app (in ``commands``): ``create_api_key``."""
