"""The supervisor console: HTML pages at ``/console`` and the two API routes they need beyond ``/v1``."""
