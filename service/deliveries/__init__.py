"""Outbound webhooks: endpoints API, a durable outbox in the database and the worker that sends it,
signed per Standard Webhooks."""
