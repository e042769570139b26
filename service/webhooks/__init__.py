"""Vapi's server messages (webhooks): authenticated, stored as events, applied to calls."""
