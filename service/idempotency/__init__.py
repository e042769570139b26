"""``Idempotency-Key``: retries of a POST get the first response, and reach Vapi once."""
