"""Persistence: the ORM models (one module for every table) and the database handle."""
