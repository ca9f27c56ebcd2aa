"""Who may use the service: API keys, realtime tokens, users' limits (``UserLimits``), the token
endpoints and proxy, credential-failure throttling, and revocation (announced, never enforced, here:
the gateway listens to ``revocation.credentials_revoked``)."""
