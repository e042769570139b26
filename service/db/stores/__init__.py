"""Precompiled Core statements, one module per table (or family of columns), shared by the slices.

The hot write paths (a webhook batch, a listen segment, a rule firing, an outbound event) run a
handful of small statements per transaction. Built through the ORM, each costs more Python than the
database spends on it; built per call, each is also keyed for SQLAlchemy's compiled cache per call.
So they are built once, here, next to the tables they touch: ``calls`` (the call row and its metadata
index), ``events`` (the timeline), ``leases`` (who records which call), ``recordings`` (recordings and
their segments), ``firings`` (rule firings) and ``outbox`` (outbound webhooks). The slices keep the
logic; these modules keep only statements, so a change of schema has one place to look.
"""
