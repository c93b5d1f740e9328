"""interactions.post: the post (its discussion thread) of a comment or a deep link, where a funnel starts

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("post", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_interactions_post", ["post"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index("ix_interactions_post")
        batch_op.drop_column("post")
