"""Transcript search: every final utterance indexed once, found by words, phrases and prefixes."""
