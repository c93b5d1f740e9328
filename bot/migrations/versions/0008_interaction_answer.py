"""interactions.answer_message_id: the bot's answer a prediction row belongs to, so its buttons find the sentence

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answer_message_id", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_interactions_answer", ["chat_id", "answer_message_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index("ix_interactions_answer")
        batch_op.drop_column("answer_message_id")
