"""API keys, idempotency records, outbound webhook endpoints and deliveries, rules and firings;
webhook dedupe keys on call events.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:22:11.594269
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy.dialects import postgresql

# JSON on SQLite, JSONB on PostgreSQL (what advanced-alchemy's JsonB type maps to).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('api_key',
    sa.Column('id', GUID(length=16), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', JSON, nullable=False),
    sa.Column('last_used_at', DateTimeUTC(timezone=True), nullable=True),
    sa.Column('revoked_at', DateTimeUTC(timezone=True), nullable=True),
    sa.Column('created_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_key')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_key_key_hash'))
    )
    with op.batch_alter_table('api_key', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_key_prefix'), ['prefix'], unique=False)

    op.create_table('idempotency_record',
    sa.Column('principal', sa.String(length=100), nullable=False),
    sa.Column('route', sa.String(length=200), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_body', JSON, nullable=True),
    sa.Column('created_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('expires_at', DateTimeUTC(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('principal', 'route', 'key', name=op.f('pk_idempotency_record'))
    )
    with op.batch_alter_table('idempotency_record', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idempotency_record_expires_at'), ['expires_at'], unique=False)

    op.create_table('rule',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('document', JSON, nullable=False),
    sa.Column('created_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', DateTimeUTC(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_rule'))
    )
    op.create_table('webhook_endpoint',
    sa.Column('id', GUID(length=16), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('events', JSON, nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('disabled_reason', sa.Text(), nullable=True),
    sa.Column('created_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoint'))
    )
    op.create_table('webhook_delivery',
    sa.Column('id', GUID(length=16), nullable=False),
    sa.Column('endpoint_id', GUID(length=16), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('payload', JSON, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('delivered_at', DateTimeUTC(timezone=True), nullable=True),
    sa.Column('created_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoint.id'], name=op.f('fk_webhook_delivery_endpoint_id_webhook_endpoint'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_delivery'))
    )
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_delivery_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_webhook_delivery_endpoint_id', ['endpoint_id', 'created_at'], unique=False)

    op.create_table('rule_firing',
    sa.Column('id', GUID(length=16), nullable=False),
    sa.Column('rule_name', sa.String(length=100), nullable=False),
    sa.Column('call_id', sa.String(length=64), nullable=False),
    sa.Column('occurrence', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('due_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('fired_at', DateTimeUTC(timezone=True), nullable=True),
    sa.Column('injection_id', GUID(length=16), nullable=True),
    sa.Column('detail', JSON, nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['call_id'], ['call.id'], name=op.f('fk_rule_firing_call_id_call'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['injection_id'], ['injection.id'], name=op.f('fk_rule_firing_injection_id_injection'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rule_firing')),
    sa.UniqueConstraint('rule_name', 'call_id', 'occurrence', name=op.f('uq_rule_firing_rule_name'))
    )
    with op.batch_alter_table('rule_firing', schema=None) as batch_op:
        batch_op.create_index('ix_rule_firing_call_id', ['call_id', 'created_at'], unique=False)
        batch_op.create_index('ix_rule_firing_due', ['status', 'due_at'], unique=False)

    op.create_table('webhook_delivery_attempt',
    sa.Column('id', GUID(length=16), nullable=False),
    sa.Column('delivery_id', GUID(length=16), nullable=False),
    sa.Column('attempted_at', DateTimeUTC(timezone=True), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_delivery.id'], name=op.f('fk_webhook_delivery_attempt_delivery_id_webhook_delivery'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_delivery_attempt'))
    )
    with op.batch_alter_table('webhook_delivery_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_delivery_attempt_delivery_id'), ['delivery_id'], unique=False)

    with op.batch_alter_table('call_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dedupe_key', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_call_event_dedupe_key', ['call_id', 'dedupe_key'])



def downgrade() -> None:



    with op.batch_alter_table('call_event', schema=None) as batch_op:
        batch_op.drop_constraint('uq_call_event_dedupe_key', type_='unique')
        batch_op.drop_column('dedupe_key')

    with op.batch_alter_table('webhook_delivery_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_delivery_attempt_delivery_id'))

    op.drop_table('webhook_delivery_attempt')
    with op.batch_alter_table('rule_firing', schema=None) as batch_op:
        batch_op.drop_index('ix_rule_firing_due')
        batch_op.drop_index('ix_rule_firing_call_id')

    op.drop_table('rule_firing')
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_delivery_endpoint_id')
        batch_op.drop_index('ix_webhook_delivery_due')

    op.drop_table('webhook_delivery')
    op.drop_table('webhook_endpoint')
    op.drop_table('rule')
    with op.batch_alter_table('idempotency_record', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_record_expires_at'))

    op.drop_table('idempotency_record')
    with op.batch_alter_table('api_key', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_key_prefix'))

    op.drop_table('api_key')
