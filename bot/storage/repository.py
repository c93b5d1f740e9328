"""The small object handlers read through (and the statistics); they never open sessions or write SQL themselves.
Writes go through the background writer: ``bot/storage/writes.py``."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from bot.storage.broadcasts import Broadcasts
from bot.storage.database import Database
from bot.storage.dead_letters import DeadLetters
from bot.storage.tables import (
    BroadcastRecipient,
    CommentTrigger,
    InboxUpdate,
    Interaction,
    OutboxReply,
    QuizRun,
    TapSentence,
    User,
    utcnow,
)
from bot.storage.vocabulary import ANSWERED, Kind, Outcome
from bot.storage.writes import InteractionEntry, OwedReply, outbox_row, write_all

log = logging.getLogger(__name__)


class Users:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def can_dm(self, user_id: int) -> bool:
        async with self._db.sessions() as session:
            row = await session.get(User, user_id)
            return bool(row and row.can_dm and not row.blocked)

    async def get(self, user_id: int) -> User | None:
        async with self._db.sessions() as session:
            return await session.get(User, user_id)

    async def language_choices(self) -> dict[str, int]:
        """How many people chose each language (those who never chose are not counted)."""
        query = (
            select(User.chosen_language, func.count())
            .where(User.chosen_language.is_not(None))
            .group_by(User.chosen_language)
        )
        async with self._db.sessions() as session:
            return {str(language): int(count) for language, count in (await session.execute(query)).all()}

    async def forget_inactive(self, cutoff: datetime) -> int:
        """Retention: people not seen since ``cutoff`` are forgotten (their name, language, whether they can be
        written to); what they did stays counted, without their id: neither as ``user_id`` nor as the id of their
        private chat, which is the same number (a group's id stays: it is the group's)."""
        async with self._db.sessions.begin() as session:
            inactive = select(User.id).where(User.last_seen < cutoff)
            await session.execute(update(Interaction).where(Interaction.chat_id.in_(inactive)).values(chat_id=None))
            await session.execute(update(Interaction).where(Interaction.user_id.in_(inactive)).values(user_id=None))
            await session.execute(delete(BroadcastRecipient).where(BroadcastRecipient.user_id.in_(inactive)))
            result = await session.execute(delete(User).where(User.last_seen < cutoff))  # their subscription too
            return int(result.rowcount or 0)

    async def chosen_language(self, user_id: int) -> str | None:
        """The language they chose for the bot's messages, or None if they never chose one."""
        async with self._db.sessions() as session:
            return await session.scalar(select(User.chosen_language).where(User.id == user_id))


class Interactions:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def log_many(self, entries: Sequence[InteractionEntry]) -> None:
        """One transaction: the users (latest details win), then the interactions."""
        await write_all(self._db, entries)

    async def all(self) -> list[Interaction]:
        async with self._db.sessions() as session:
            return list((await session.scalars(select(Interaction).order_by(Interaction.id))).all())

    async def since(self, start: datetime | None) -> list[Interaction]:
        """Interactions from ``start`` on (all of them for None), oldest first."""
        query = select(Interaction).order_by(Interaction.id)
        if start is not None:
            query = query.where(Interaction.created_at >= start)
        async with self._db.sessions() as session:
            return list((await session.scalars(query)).all())

    async def funnel_by_post(
        self, last_pages: Mapping[str | None, int], quiz_questions: int, *, posts: int = 10
    ) -> list[dict[str, Any]]:
        """Per post (the ``posts`` newest), counted by the database: its keyword comments and public replies, the
        people who opened the bot by its deep link, and, of the people who came by it (the post of their first row
        that names one), how many were asked to join the channel and did, began a guide, reached its last page
        (``last_pages``: guide -> its last page's number; None for rows from before guides had slugs) or had it
        whole, finished the quiz (``quiz_questions``), asked for new-guide messages, and their predictions."""
        kind, trigger, outcome, user = Interaction.kind, Interaction.trigger, Interaction.outcome, Interaction.user_id
        people = func.count(func.distinct(user))
        async with self._db.sessions() as session:
            newest = await session.execute(
                select(Interaction.post, func.min(Interaction.created_at).label("since"))
                .where(Interaction.post.is_not(None))
                .group_by(Interaction.post)
                .order_by(func.min(Interaction.created_at).desc(), func.min(Interaction.id).desc())
                .limit(posts)
            )
            rows = {post: {"post": post, "since": since} for post, since in newest.all()}
            if not rows:
                return []
            direct = await session.execute(
                select(
                    Interaction.post,
                    func.count().filter(kind == Kind.COMMENT),
                    func.count().filter(and_(kind == Kind.COMMENT, outcome == Outcome.BUTTON)),
                    people.filter(and_(kind == Kind.GUIDE, trigger.like("start:%"))),
                    func.max(trigger).filter(and_(kind == Kind.COMMENT, trigger.like("% on %"))),
                )
                .where(Interaction.post.in_(rows))
                .group_by(Interaction.post)
            )
            for post, comments, replies, opened, named in direct.all():
                channel_post = named.rsplit(" on ", 1)[1] if named else None
                rows[post].update(
                    comments=comments, public_replies=replies, dms_opened=opened, channel_post=channel_post
                )
            first = (
                select(user, func.min(Interaction.id).label("first_id"))
                .where(Interaction.post.is_not(None), user.is_not(None))
                .group_by(user)
                .subquery()
            )
            came = (
                select(Interaction.user_id, Interaction.post).join(first, Interaction.id == first.c.first_id).subquery()
            )
            finished = or_(
                trigger == "all",
                *(and_(Interaction.guide.is_(g) if g is None else Interaction.guide == g, trigger == f"page{n}")
                  for g, n in last_pages.items()),
            )  # fmt: skip
            steps = await session.execute(
                select(
                    came.c.post,
                    people.filter(and_(kind == Kind.GATE, trigger == "shown")),
                    people.filter(and_(kind == Kind.GATE, trigger == "passed")),
                    people.filter(
                        or_(
                            and_(kind == Kind.GUIDE, outcome != Outcome.GATED),
                            and_(kind == Kind.COMMENT, outcome == Outcome.DM),
                        )
                    ),
                    people.filter(and_(kind == Kind.LESSON, finished)),
                    people.filter(and_(kind == Kind.QUIZ, trigger == f"q{quiz_questions}")),
                    func.count().filter(kind == Kind.PREDICTION),
                    people.filter(and_(kind == Kind.FOLLOW, trigger == "on")),
                )
                .join(came, user == came.c.user_id)
                .where(came.c.post.in_(rows))
                .group_by(came.c.post)
            )
            for post, shown, passed, began, read, quiz, predictions, subscribed in steps.all():
                rows[post].update(gate_shown=shown, gate_passed=passed, guide_started=began, guide_finished=read,
                                  quiz_finished=quiz, predictions=predictions, subscriptions=subscribed)  # fmt: skip
        return list(rows.values())

    async def totals(self) -> tuple[dict[str, int], int]:
        """All-time count per kind, and the number of distinct users."""
        async with self._db.sessions() as session:
            per_kind = dict(
                (await session.execute(select(Interaction.kind, func.count()).group_by(Interaction.kind))).all()
            )
            users = await session.scalar(select(func.count(func.distinct(Interaction.user_id))))
        return {str(k): int(v) for k, v in per_kind.items()}, int(users or 0)

    async def aggregate_since(self, start: datetime, *, percentiles: Sequence[int] = (50, 95)) -> WindowAggregates:
        """What /stats shows about the interactions from ``start`` on, counted by the database: a handful of
        GROUP BY queries over the (kind, created_at) index, whatever the window holds."""
        recent = Interaction.created_at >= start
        ok = Interaction.outcome.in_([str(outcome) for outcome in ANSWERED])
        first = func.min(Interaction.id)
        async with self._db.sessions() as session:
            dialect = session.bind.dialect.name
            day = (
                func.date(func.timezone("UTC", Interaction.created_at))
                if dialect == "postgresql"
                else func.date(Interaction.created_at)
            )
            by_kind_outcome = (
                await session.execute(
                    select(Interaction.kind, Interaction.outcome, func.count())
                    .where(recent)
                    .group_by(Interaction.kind, Interaction.outcome)
                )
            ).all()
            unique_users = await session.scalar(select(func.count(func.distinct(Interaction.user_id))).where(recent))
            triggers = (
                await session.execute(
                    select(Interaction.kind, Interaction.trigger, func.count(), first)
                    .where(recent, Interaction.kind.in_(("guide", "comment")), Interaction.trigger.is_not(None))
                    .group_by(Interaction.kind, Interaction.trigger)
                )
            ).all()
            top_words = (
                await session.execute(
                    select(Interaction.top_prediction, func.count(), first)
                    .where(recent, ok, Interaction.top_prediction.is_not(None))
                    .group_by(Interaction.top_prediction)
                )
            ).all()
            daily = (
                await session.execute(
                    select(day, Interaction.kind, func.count()).where(recent).group_by(day, Interaction.kind)
                )
            ).all()
            timed = (recent, ok, Interaction.kind == str(Kind.PREDICTION), Interaction.latency_ms.is_not(None))
            count = int(await session.scalar(select(func.count()).where(*timed)) or 0)
            latency: dict[int, float | None] = {}
            for q in percentiles:
                latency[q] = None
                if count:
                    query = select(Interaction.latency_ms).where(*timed).order_by(Interaction.latency_ms)
                    latency[q] = await session.scalar(query.offset(nearest_rank(count, q) - 1).limit(1))
        return WindowAggregates(
            by_kind_outcome={(str(k), str(o)): int(c) for k, o, c in by_kind_outcome},
            unique_users=int(unique_users or 0),
            triggers=[(str(k), t, int(c), int(f)) for k, t, c, f in triggers],
            top_words=[(str(w), int(c), int(f)) for w, c, f in top_words],
            daily={(_as_date(d), str(k)): int(c) for d, k, c in daily},
            latency_percentiles=latency,
        )

    async def sentence_of_answer(self, chat_id: int, message_id: int) -> str | None:
        """The sentence the bot's answer ``message_id`` in ``chat_id`` was for (None: unknown, forgotten, or its
        text removed by retention)."""
        query = (
            select(Interaction.input_text)
            .where(Interaction.chat_id == chat_id, Interaction.answer_message_id == message_id)
            .order_by(Interaction.id.desc())
            .limit(1)
        )
        async with self._db.sessions() as session:
            return await session.scalar(query)

    async def last_lesson_page(self, user_id: int, guide: str, *, unnamed_too: bool = False) -> int | None:
        """The page of this guide's lesson this person was last sent (0-based), from their ``lesson`` rows; None if
        none. ``unnamed_too``: rows from before guides had slugs (the default guide's) count as this guide's."""
        which = Interaction.guide == guide
        if unnamed_too:
            which = which | Interaction.guide.is_(None)
        query = (
            select(Interaction.trigger)
            .where(Interaction.user_id == user_id, Interaction.kind == Kind.LESSON, Interaction.trigger.like("page%"))
            .where(which)
            .order_by(Interaction.id.desc())
            .limit(1)
        )
        async with self._db.sessions() as session:
            trigger = await session.scalar(query)
        number = (trigger or "").removeprefix("page")
        return int(number) if number.isdigit() else None

    async def redact_older_than(self, cutoff: datetime) -> int:
        """Retention: older interactions keep their counts and timings but lose the texts people typed
        and what the model answered to them."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(Interaction)
                .where(Interaction.created_at < cutoff)
                .where((Interaction.input_text.is_not(None)) | (Interaction.top_prediction.is_not(None)))
                .values(input_text=None, predictions=None, top_prediction=None, trigger=None)
            )
            return int(result.rowcount or 0)


@dataclass(frozen=True)
class WindowAggregates:
    by_kind_outcome: dict[tuple[str, str], int]
    unique_users: int
    triggers: list[tuple[str, str | None, int, int]]  # kind, trigger, count, first id
    top_words: list[tuple[str, int, int]]  # word, count, first id
    daily: dict[tuple[date, str], int]
    latency_percentiles: dict[int, float | None]


def nearest_rank(count: int, q: float) -> int:
    """The 1-based rank of the q-th percentile (0..100) among ``count`` sorted values: an observed value, no
    interpolation."""
    return max(1, math.ceil(count * q / 100))


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


class Comments:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, post_key: str, user_id: int) -> bool:
        """True the first time this user triggers under this post; False every time after (the database's
        unique constraint decides, so two comments racing each other cannot both win)."""
        try:
            async with self._db.sessions.begin() as session:
                session.add(CommentTrigger(post_key=post_key, user_id=user_id))
        except IntegrityError:
            return False
        return True

    async def claim_and_owe(self, post_key: str, user_id: int, owed: OwedReply | None) -> int | None:
        """``claim`` and, in the same transaction, the public reply it owes as an outbox row: None if it was
        claimed already; else the row's id (0 with nothing owed)."""
        try:
            async with self._db.sessions.begin() as session:
                session.add(CommentTrigger(post_key=post_key, user_id=user_id))
                if owed is None:
                    return 0
                row = outbox_row(owed)
                session.add(row)
                await session.flush()
                return row.id
        except IntegrityError:
            return None

    async def delete_older_than(self, cutoff: datetime) -> int:
        async with self._db.sessions.begin() as session:
            result = await session.execute(delete(CommentTrigger).where(CommentTrigger.handled_at < cutoff))
            return int(result.rowcount or 0)


class Inbox:
    """Updates stored as they are fetched, before Telegram is told they were received."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def store(self, updates: Sequence[tuple[int, str, int | None]]) -> set[int]:
        """Store (update_id, JSON, sender's user id) in one transaction; returns the ids that were new (Telegram
        sends an update again if the bot stopped before confirming it, and the stored copy is already being
        handled)."""
        if not updates:
            return set()
        ids = [update_id for update_id, _, _ in updates]
        for attempt in range(2):
            try:
                async with self._db.sessions.begin() as session:
                    known = set(
                        (
                            await session.scalars(select(InboxUpdate.update_id).where(InboxUpdate.update_id.in_(ids)))
                        ).all()
                    )
                    session.add_all(
                        [
                            InboxUpdate(update_id=i, payload=payload, user_id=user_id)
                            for i, payload, user_id in updates
                            if i not in known
                        ]
                    )
                return set(ids) - known
            except IntegrityError:  # the same update stored meanwhile (two webhook deliveries at once): look again
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def unfinished(self) -> list[InboxUpdate]:
        """Updates whose handling had not finished when the bot stopped, oldest first."""
        async with self._db.sessions() as session:
            query = select(InboxUpdate).where(InboxUpdate.status == "pending").order_by(InboxUpdate.update_id)
            return list((await session.scalars(query)).all())

    async def pending_ids(self) -> set[int]:
        """The ids of the updates whose handling has not finished."""
        async with self._db.sessions() as session:
            query = select(InboxUpdate.update_id).where(InboxUpdate.status == "pending")
            return set((await session.scalars(query)).all())

    async def payloads(self, update_ids: Sequence[int]) -> list[tuple[int, str]]:
        """(update_id, JSON) of these updates that are still pending, oldest first."""
        async with self._db.sessions() as session:
            query = (
                select(InboxUpdate.update_id, InboxUpdate.payload)
                .where(InboxUpdate.update_id.in_(list(update_ids)), InboxUpdate.status == "pending")
                .order_by(InboxUpdate.update_id)
            )
            return [(int(i), str(p)) for i, p in (await session.execute(query)).all()]

    async def expire(self, update_ids: Sequence[int], status: str = "expired") -> None:
        """Mark them finished without handling them: ``expired`` (too old) or ``parked`` (poisonous)."""
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(InboxUpdate)
                .where(InboxUpdate.update_id.in_(list(update_ids)))
                .values(status=status, finished_at=utcnow())
            )

    async def count_attempt(self, update_ids: Sequence[int]) -> None:
        """These are handed on again now (committed before they are)."""
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(InboxUpdate)
                .where(InboxUpdate.update_id.in_(list(update_ids)))
                .values(attempts=InboxUpdate.attempts + 1)
            )

    async def prune(self, cutoff: datetime) -> int:
        """Delete finished (or expired) updates received before ``cutoff``."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                delete(InboxUpdate).where(InboxUpdate.status != "pending", InboxUpdate.received_at < cutoff)
            )
            return int(result.rowcount or 0)


ORPHAN_AFTER_S = 10.0


class Outbox:
    """Public replies owed to groups: a row from the moment a reply is owed until Telegram has taken it."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, owed: OwedReply) -> int:
        async with self._db.sessions.begin() as session:
            row = outbox_row(owed)
            session.add(row)
            await session.flush()
            return row.id

    async def remove(self, outbox_ids: Sequence[int]) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(delete(OutboxReply).where(OutboxReply.id.in_(list(outbox_ids))))

    async def pending(self) -> list[OutboxReply]:
        """The replies owed, oldest first (each row leaves once its reply is sent: ``OutboxSent``)."""
        async with self._db.sessions() as session:
            return list((await session.scalars(select(OutboxReply).order_by(OutboxReply.id))).all())

    async def orphans(self, known: Collection[int], *, older_than_s: float = ORPHAN_AFTER_S) -> list[OutboxReply]:
        """Replies owed for longer than ``older_than_s`` that this process does not know of (``known``): owed by
        a process that stood down, for the active one to send. (The age leaves the process that is adding a row
        the moment between its insert and its queue.)"""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        async with self._db.sessions() as session:
            old = (await session.scalars(select(OutboxReply.id).where(OutboxReply.created_at < cutoff))).all()
            unknown = [i for i in old if i not in known]
            if not unknown:
                return []
            query = select(OutboxReply).where(OutboxReply.id.in_(unknown)).order_by(OutboxReply.id)
            return list((await session.scalars(query)).all())


class PersonState:
    """What a person is in the middle of, kept beyond one process: tap-to-mask sentences and quizzes."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def tap_sentence(self, key: str) -> TapSentence | None:
        async with self._db.sessions() as session:
            return await session.get(TapSentence, key)

    async def quiz(self, poll_id: str) -> QuizRun | None:
        async with self._db.sessions() as session:
            return await session.get(QuizRun, poll_id)

    async def delete_older_than(self, tap_cutoff: datetime, quiz_cutoff: datetime) -> int:
        """Retention: tap sentences older than ``tap_cutoff`` (texts people typed) and quizzes left unanswered
        since ``quiz_cutoff``."""
        async with self._db.sessions.begin() as session:
            taps = await session.execute(delete(TapSentence).where(TapSentence.created_at < tap_cutoff))
            quizzes = await session.execute(delete(QuizRun).where(QuizRun.asked_at < quiz_cutoff))
            return int(taps.rowcount or 0) + int(quizzes.rowcount or 0)


class Repository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.users = Users(db)
        self.interactions = Interactions(db)
        self.comments = Comments(db)
        self.inbox = Inbox(db)
        self.outbox = Outbox(db)
        self.state = PersonState(db)
        self.dead_letters = DeadLetters(db)
        self.broadcasts = Broadcasts(db)
