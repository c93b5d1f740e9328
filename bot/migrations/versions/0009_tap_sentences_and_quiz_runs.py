"""tap_sentences and quiz_runs: per-person state that must outlive a process (a restart, a standby's takeover)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tap_sentences",
        sa.Column("key", sa.String(length=16), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tap_sentences_user_id", "tap_sentences", ["user_id"])
    op.create_index("ix_tap_sentences_created_at", "tap_sentences", ["created_at"])
    op.create_table(
        "quiz_runs",
        sa.Column("poll_id", sa.String(length=64), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("question", sa.Integer(), nullable=False),
        sa.Column("right", sa.Integer(), nullable=False),
        sa.Column("asked_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_quiz_runs_user_id", "quiz_runs", ["user_id"])
    op.create_index("ix_quiz_runs_asked_at", "quiz_runs", ["asked_at"])


def downgrade() -> None:
    op.drop_table("quiz_runs")
    op.drop_table("tap_sentences")
