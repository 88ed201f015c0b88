"""round: retrain_requested_at (Label Studio's "Start Training" through the ML backend)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table('round', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retrain_requested_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table('round', schema=None) as batch_op:
        batch_op.drop_column('retrain_requested_at')
