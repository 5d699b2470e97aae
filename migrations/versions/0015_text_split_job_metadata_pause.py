"""how a plain-text upload is split into records; OpenAI's metadata on training jobs; pausing runs

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 19:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('text_split', sa.String(length=20), nullable=True))
    with op.batch_alter_table('training_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('metadata', sa.JSON(), nullable=True))
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pause_requested', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('pause_requested')
    with op.batch_alter_table('training_jobs', schema=None) as batch_op:
        batch_op.drop_column('metadata')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('text_split')
