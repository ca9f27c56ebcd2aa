"""Self-hosted realtime image inference: the Django gateway and the model runner."""
