"""Talking to Vapi: its REST API and the per-call control URL."""
