"""a cleaning is committed by a background run

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 06:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cleanings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('commit_run_id', sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_cleanings_commit_run_id_runs'), 'runs', ['commit_run_id'], ['id'], ondelete='SET NULL'
        )


def downgrade() -> None:
    with op.batch_alter_table('cleanings', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_cleanings_commit_run_id_runs'), type_='foreignkey')
        batch_op.drop_column('commit_run_id')
