"""Recordings: where the audio lives, and how it is served (PCM, WAV, per channel, ranges)."""
