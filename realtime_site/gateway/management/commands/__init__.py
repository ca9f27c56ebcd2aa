"""``manage.py serve`` (the gateway and a runner, for one machine) and ``manage.py demo_user``."""
