"""Drop ix_sample_content_hash: no query reads samples by content hash

The index cost about 70 MB and 1 s of build time per million samples on every import; the
importer compares hashes of the keys it looks up (through the (project_id, key) unique index).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sample', schema=None) as batch_op:
        batch_op.drop_index('ix_sample_content_hash')


def downgrade() -> None:
    with op.batch_alter_table('sample', schema=None) as batch_op:
        batch_op.create_index('ix_sample_content_hash', ['content_hash'], unique=False)
