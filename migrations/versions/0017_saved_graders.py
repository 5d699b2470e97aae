"""graders saved by name (the Evaluations page)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 05:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
import app.db.base


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('graders',
    sa.Column('owner_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', app.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_graders_owner_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_graders'))
    )
    with op.batch_alter_table('graders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_graders_owner_id'), ['owner_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('graders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_graders_owner_id'))
    op.drop_table('graders')
