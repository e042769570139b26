"""Calls: placing, tracking and controlling Vapi calls, and their timelines."""
