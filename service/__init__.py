"""Switchboard: a self-hosted companion service for Vapi calls."""

__version__ = "0.1.0"
