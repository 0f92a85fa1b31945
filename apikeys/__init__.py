"""API keys for the charge-point platform: issue, list, revoke and verify."""
