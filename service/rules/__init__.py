"""Declarative rules: say the right thing at the right moment of a live call, exactly once.

Pure core (``schema``, ``conditions``, ``templates``, ``milestones``) and I/O at the edges
(``firings`` for the database, ``engine`` for the running service, ``service``/``controllers`` for the API).
"""
