"""top_prediction column (filled from the stored predictions) and a (kind, created_at) index for /stats

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("top_prediction", sa.String(length=100), nullable=True))
        batch_op.create_index("ix_interactions_kind_created_at", ["kind", "created_at"], unique=False)

    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, predictions FROM interactions WHERE predictions IS NOT NULL"))
    for row_id, predictions in rows.fetchall():
        top = _top_word(json.loads(predictions) if isinstance(predictions, str) else predictions)
        if top is not None:
            connection.execute(
                sa.text("UPDATE interactions SET top_prediction = :top WHERE id = :id"), {"top": top, "id": row_id}
            )


def downgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index("ix_interactions_kind_created_at")
        batch_op.drop_column("top_prediction")


def _top_word(predictions: object) -> str | None:
    """[[{"token": "mat", "score": 0.4}, ...], ...] -> "mat"."""
    try:
        return str(predictions[0][0]["token"])[:100]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return None
