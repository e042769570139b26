"""Recordings lifecycle: erasure (on request and after retention), legal hold, and the lossless archive."""
