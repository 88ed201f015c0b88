"""sample.row and vectorfile: the project's vector store, read by row

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'vectorfile',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('path', sa.String(), nullable=False),
        sa.Column('first_row', sa.BigInteger(), nullable=False),
        sa.Column('rows', sa.BigInteger(), nullable=False),
        sa.Column('dim', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('project_id', 'path', name='uq_vectorfile_project_path'),
        sa.UniqueConstraint('project_id', 'first_row', name='uq_vectorfile_project_first_row'),
    )
    op.create_index(op.f('ix_vectorfile_project_id'), 'vectorfile', ['project_id'], unique=False)
    with op.batch_alter_table('sample', schema=None) as batch_op:
        batch_op.add_column(sa.Column('row', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sample', schema=None) as batch_op:
        batch_op.drop_column('row')
    op.drop_index(op.f('ix_vectorfile_project_id'), table_name='vectorfile')
    op.drop_table('vectorfile')
