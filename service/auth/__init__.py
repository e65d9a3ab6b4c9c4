"""API keys: hashed tokens that authorise writes."""
