"""project: next scheduled action (alloop serve)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_action_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('next_action', sa.String(), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_column('next_action')
        batch_op.drop_column('next_action_at')
