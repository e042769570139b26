"""Conversation analytics: who talked when, measured from the recorded audio after the call."""
