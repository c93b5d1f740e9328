"""Broadcasts to the people who asked for them (``users.subscribed_at``): a job and a row per recipient, so a kill
at any moment and a restart go on where they stopped and nobody gets a message twice.

Each recipient goes pending -> sending (written before the call to Telegram) -> sent. A row found "sending" when
the active process starts was in flight when the last one died: it may have arrived, so it becomes "unknown" and
is never sent again (at most the rows in flight at the kill: one, the sender goes one at a time). "blocked":
Telegram said the person blocked the bot or is gone (and they are unsubscribed); "failed": refused, or still
failing after a few tries.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.database import Database
from bot.storage.tables import Broadcast, BroadcastRecipient, User

STATES = ("pending", "sending", "sent", "unknown", "failed", "blocked")


@dataclass(frozen=True)
class Recipient:
    broadcast_id: int
    user_id: int
    attempts: int
    text: str
    guide: str | None


@dataclass(frozen=True)
class Progress:
    broadcast_id: int
    state: str  # sending, done, cancelled
    counts: dict[str, int]

    @property
    def left(self) -> int:
        return self.counts.get("pending", 0) + self.counts.get("sending", 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Broadcasts:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def subscribers(self) -> int:
        """People the next broadcast would reach: subscribed, may be written to, not blocked."""
        async with self._db.sessions() as session:
            return int(await session.scalar(select(func.count()).where(*self._reachable())) or 0)

    @staticmethod
    def _reachable():
        return User.subscribed_at.is_not(None), User.can_dm.is_(True), User.blocked.is_(False)

    async def is_subscribed(self, user_id: int) -> bool:
        async with self._db.sessions() as session:
            return await session.scalar(select(User.subscribed_at).where(User.id == user_id)) is not None

    async def create(self, text: str, guide: str | None, *, draft: bool = False) -> tuple[int, int]:
        """A broadcast to everyone subscribed now (one INSERT ... SELECT): its id and how many it will reach. A
        ``draft`` (/broadcast's preview) reaches nobody until :meth:`launch`."""
        async with self._db.sessions.begin() as session:
            broadcast = Broadcast(text=text, guide=guide, state="draft" if draft else "sending", created_at=_now())
            session.add(broadcast)
            await session.flush()
            if draft:
                return broadcast.id, 0
            return broadcast.id, await self._address(session, broadcast.id)

    async def launch(self, broadcast_id: int) -> int | None:
        """A draft goes out (once: a second press finds no draft): how many it will reach, None if not a draft."""
        async with self._db.sessions.begin() as session:
            draft = (Broadcast.id == broadcast_id) & (Broadcast.state == "draft")
            started = await session.execute(update(Broadcast).where(draft).values(state="sending"))
            if started.rowcount != 1:
                return None
            return await self._address(session, broadcast_id)

    async def _address(self, session: AsyncSession, broadcast_id: int) -> int:
        """A row for each person reachable now."""
        people = select(
            literal(broadcast_id), User.id, literal("pending"), literal(0),
            literal(_now(), BroadcastRecipient.updated_at.type),
        ).where(*self._reachable())  # fmt: skip
        columns = ["broadcast_id", "user_id", "state", "attempts", "updated_at"]
        result = await session.execute(insert(BroadcastRecipient).from_select(columns, people))
        return int(result.rowcount or 0)

    async def recover(self) -> int:
        """At the start of the active process: rows that were in flight when the last one stopped are "unknown"."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(BroadcastRecipient)
                .where(BroadcastRecipient.state == "sending")
                .values(state="unknown", updated_at=_now())
            )
            return int(result.rowcount or 0)

    async def next_recipients(self, limit: int = 50) -> list[Recipient]:
        """Pending recipients of broadcasts still sending, oldest broadcast first."""
        query = (
            select(BroadcastRecipient, Broadcast.text, Broadcast.guide)
            .join(Broadcast, Broadcast.id == BroadcastRecipient.broadcast_id)
            .where(Broadcast.state == "sending", BroadcastRecipient.state == "pending")
            .order_by(BroadcastRecipient.broadcast_id, BroadcastRecipient.user_id)
            .limit(limit)
        )
        async with self._db.sessions() as session:
            rows = (await session.execute(query)).all()
        return [Recipient(r.broadcast_id, r.user_id, r.attempts, text, guide) for r, text, guide in rows]

    async def claim(self, recipient: Recipient) -> bool:
        """pending -> sending, if it is still pending (a cancelled broadcast's, or one a second process took, is
        not): the one write between the database and a message that may arrive twice."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(BroadcastRecipient)
                .where(
                    BroadcastRecipient.broadcast_id == recipient.broadcast_id,
                    BroadcastRecipient.user_id == recipient.user_id,
                    BroadcastRecipient.state == "pending",
                    BroadcastRecipient.broadcast_id.in_(select(Broadcast.id).where(Broadcast.state == "sending")),
                )
                .values(state="sending", updated_at=_now())
            )
            return result.rowcount == 1

    async def mark(self, recipient: Recipient, state: str, *, attempts: int | None = None) -> None:
        values: dict[str, object] = {"state": state, "updated_at": _now()}
        if attempts is not None:
            values["attempts"] = attempts
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(BroadcastRecipient)
                .where(
                    BroadcastRecipient.broadcast_id == recipient.broadcast_id,
                    BroadcastRecipient.user_id == recipient.user_id,
                )
                .values(**values)
            )

    async def unsubscribe(self, user_id: int) -> None:
        """Telegram said they blocked the bot or are gone: no more broadcasts for them."""
        async with self._db.sessions.begin() as session:
            await session.execute(update(User).where(User.id == user_id).values(subscribed_at=None))

    async def finish_done(self) -> list[int]:
        """Broadcasts with nobody pending any more become "done"; their ids."""
        pending = select(BroadcastRecipient.broadcast_id).where(BroadcastRecipient.state.in_(("pending", "sending")))
        async with self._db.sessions.begin() as session:
            done = list(
                (
                    await session.scalars(
                        select(Broadcast.id).where(Broadcast.state == "sending", Broadcast.id.not_in(pending))
                    )
                ).all()
            )
            if done:
                await session.execute(update(Broadcast).where(Broadcast.id.in_(done)).values(state="done"))
        return done

    async def progress(self, broadcast_id: int | None = None) -> Progress | None:
        """How a broadcast (the newest if none is named) stands: its state and its recipients by state."""
        async with self._db.sessions() as session:
            which = broadcast_id or await session.scalar(select(func.max(Broadcast.id)))
            state = await session.scalar(select(Broadcast.state).where(Broadcast.id == which)) if which else None
            if state is None:
                return None
            rows = await session.execute(
                select(BroadcastRecipient.state, func.count())
                .where(BroadcastRecipient.broadcast_id == which)
                .group_by(BroadcastRecipient.state)
            )
            return Progress(int(which), state, dict(Counter(dict(rows.all()))))

    async def cancel(self, broadcast_id: int | None = None) -> Progress | None:
        """Stops a broadcast (the newest if none is named): the people not reached yet never get it."""
        current = await self.progress(broadcast_id)
        if current is None:
            return None
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Broadcast)
                .where(Broadcast.id == current.broadcast_id, Broadcast.state == "sending")
                .values(state="cancelled")
            )
        return await self.progress(current.broadcast_id)
