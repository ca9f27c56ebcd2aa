"""Management commands of the gateway (in ``commands``): ``serve``, ``demo_user``."""
