"""stored chat completions (store: true on /v1/chat/completions)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 11:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
import app.db.base


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stored_completions',
    sa.Column('owner_id', sa.Uuid(), nullable=False),
    sa.Column('completion_id', sa.String(length=40), nullable=False),
    sa.Column('model', sa.String(length=300), nullable=False),
    sa.Column('messages', sa.JSON(), nullable=False),
    sa.Column('answer', sa.Text(), nullable=False),
    sa.Column('finish_reason', sa.String(length=20), nullable=False),
    sa.Column('usage', sa.JSON(), nullable=True),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=True),
    sa.Column('rating', sa.String(length=8), nullable=True),
    sa.Column('correction', sa.Text(), nullable=True),
    sa.Column('dataset_id', sa.Uuid(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', app.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_stored_completions_owner_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_stored_completions_dataset_id_datasets'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stored_completions')),
    sa.UniqueConstraint('completion_id', name=op.f('uq_stored_completions_completion_id'))
    )
    with op.batch_alter_table('stored_completions', schema=None) as batch_op:
        batch_op.create_index('ix_stored_completions_owner_created', ['owner_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_stored_completions_model'), ['model'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('stored_completions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stored_completions_model'))
        batch_op.drop_index('ix_stored_completions_owner_created')
    op.drop_table('stored_completions')
