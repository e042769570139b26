"""API keys: hashed at rest, scoped, shown once."""
