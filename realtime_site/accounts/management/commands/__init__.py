"""``manage.py create_api_key USERNAME``: an API key, printed once."""
