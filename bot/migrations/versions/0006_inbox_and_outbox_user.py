"""inbox.user_id and outbox.user_id: whose update or owed reply a row holds, so /forget can delete them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The update fields that carry a sender ("from"), and poll_answer's "user": as bot.storage.repository reads them.
SENDER_FIELDS = ("message", "edited_message", "callback_query", "inline_query", "chosen_inline_result")


def sender(payload: str) -> int | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    for name in SENDER_FIELDS:
        person = (data.get(name) or {}).get("from")
        if isinstance(person, dict) and isinstance(person.get("id"), int):
            return person["id"]
    person = (data.get("poll_answer") or {}).get("user")
    return person["id"] if isinstance(person, dict) and isinstance(person.get("id"), int) else None


def upgrade() -> None:
    for table in ("inbox", "outbox"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("user_id", sa.BigInteger(), nullable=True))
            batch_op.create_index(f"ix_{table}_user_id", ["user_id"], unique=False)
    # Rows stored before this revision: their sender, read from the stored update.
    connection = op.get_bind()
    inbox = sa.table("inbox", sa.column("update_id", sa.BigInteger), sa.column("payload", sa.Text),
                     sa.column("user_id", sa.BigInteger))  # fmt: skip
    for update_id, payload in connection.execute(sa.select(inbox.c.update_id, inbox.c.payload)).all():
        user_id = sender(payload)
        if user_id is not None:
            connection.execute(sa.update(inbox).where(inbox.c.update_id == update_id).values(user_id=user_id))
    outbox = sa.table("outbox", sa.column("id", sa.Integer), sa.column("payload", sa.Text),
                      sa.column("user_id", sa.BigInteger))  # fmt: skip
    for row_id, payload in connection.execute(sa.select(outbox.c.id, outbox.c.payload)).all():
        try:
            user_id = json.loads(payload).get("user_id")
        except ValueError:
            user_id = None
        if isinstance(user_id, int):
            connection.execute(sa.update(outbox).where(outbox.c.id == row_id).values(user_id=user_id))


def downgrade() -> None:
    for table in ("inbox", "outbox"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_user_id")
            batch_op.drop_column("user_id")
