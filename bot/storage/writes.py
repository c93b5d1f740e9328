"""What the background writer writes: one small dataclass per kind of write (``Write`` is their union),
who each is about (``write_user_id``, for /forget), and ``write_all``, which applies a batch in one transaction
(and ``_forget``, every row about a person). Reads and statistics are in ``repository.py``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import delete, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.database import Database
from bot.storage.tables import (
    BroadcastRecipient,
    CommentTrigger,
    DeadLetter,
    InboxUpdate,
    Interaction,
    OutboxReply,
    QuizRun,
    TapSentence,
    User,
    utcnow,
)
from bot.storage.vocabulary import Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserInfo:
    """What the log keeps of a Telegram user (handlers build it from ``telegram.User``)."""

    id: int
    username: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class InteractionEntry:
    kind: str  # guide, prediction, chart, inline, comment, start, error
    user: UserInfo | None = None
    chat_id: int | None = None
    chat_type: str | None = None
    trigger: str | None = None
    input_text: str | None = None
    model_name: str | None = None
    predictions: Any = None
    latency_ms: float | None = None
    outcome: str = Outcome.OK
    created_at: datetime | None = None  # now, unless given (imports, tests)
    answer_message_id: int | None = None  # the bot's answer in chat_id this is about (its buttons look it up)
    guide: str | None = None  # the guide's slug, for guide, lesson and comment rows
    post: str | None = None  # "<group>:<thread>": the post a comment was under, or a deep link came from


@dataclass(frozen=True)
class UserStarted:
    """The user pressed Start (or opened a deep link): the bot may write to them from now on."""

    user: UserInfo
    created_at: datetime


@dataclass(frozen=True)
class UserUnreachable:
    """Telegram refused a DM (Forbidden): never started, or blocked the bot."""

    user_id: int
    blocked: bool
    created_at: datetime


@dataclass(frozen=True)
class CommentClaimed:
    """A keyword comment that was answered while the database could not record it (written later)."""

    post_key: str
    user_id: int
    created_at: datetime


@dataclass(frozen=True)
class UpdateDone:
    """The handling of an update has finished: it is not replayed after a restart."""

    update_id: int
    created_at: datetime


@dataclass(frozen=True)
class OwedReply:
    """A public comment reply not sent before the bot stopped (``bot.public_replies`` encodes the payload)."""

    chat_id: int
    thread: int
    user_id: int | None
    payload: str
    created_at: datetime


@dataclass(frozen=True)
class OutboxSent:
    """Telegram took these owed replies (or refused them for good): their outbox rows go."""

    outbox_ids: tuple[int, ...]
    created_at: datetime


@dataclass(frozen=True)
class SubscriptionChanged:
    """They asked to be told about new guides (/subscribe, "🔔"), or to stop (/unsubscribe, "🔕")."""

    user: UserInfo
    subscribed: bool
    created_at: datetime


@dataclass(frozen=True)
class LanguageChosen:
    """The user chose the language of the bot's messages (/language or a language button)."""

    user: UserInfo
    language: str
    created_at: datetime


@dataclass(frozen=True)
class TapSentenceKept:
    """A sentence offered for tap-to-mask under ``key`` (its buttons' data)."""

    key: str
    user_id: int | None
    text: str
    created_at: datetime


@dataclass(frozen=True)
class QuizAsked:
    """A quiz's next poll was sent: its progress is kept under the poll's id (the previous poll's row goes)."""

    poll_id: str
    user_id: int
    chat_id: int
    question: int
    right: int
    previous_poll_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class QuizEnded:
    """The quiz whose last poll is ``poll_id`` is over."""

    poll_id: str
    created_at: datetime


@dataclass(frozen=True)
class Forget:
    """Delete everything stored about a user (/forget)."""

    user_id: int
    created_at: datetime


# What the background writer writes, in the order it was handed over.


Write = (
    InteractionEntry
    | UserStarted
    | UserUnreachable
    | CommentClaimed
    | UpdateDone
    | OwedReply
    | OutboxSent
    | LanguageChosen
    | SubscriptionChanged
    | TapSentenceKept
    | QuizAsked
    | QuizEnded
    | Forget
)


def write_user_id(op: Write) -> int | None:
    if isinstance(op, InteractionEntry):
        return op.user.id if op.user is not None else None
    if isinstance(op, (UserStarted, LanguageChosen, SubscriptionChanged)):
        return op.user.id
    if isinstance(op, (UpdateDone, OutboxSent, QuizEnded)):
        return None
    return op.user_id


def _insert(session: AsyncSession, table: type):
    dialect = session.bind.dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


async def _upsert_user(session: AsyncSession, user: UserInfo, *, started: bool = False) -> None:
    now = utcnow()
    values = {"id": user.id, "username": user.username, "language": user.language, "first_seen": now, "last_seen": now}
    changes: dict[str, Any] = {"username": user.username, "language": user.language, "last_seen": now}
    if started:
        values.update(can_dm=True, blocked=False)
        changes.update(can_dm=True, blocked=False)
    statement = _insert(session, User).values(**values)
    await session.execute(statement.on_conflict_do_update(index_elements=[User.id], set_=changes))


async def _forget(session: AsyncSession, user_id: int) -> None:
    """Every row about the person: what they did, their comment claims, the updates they sent (private chats and
    groups alike), the public replies owed to them, their tap sentences and quiz, the writes of theirs the database
    refused, the broadcasts they were on the list of, and who they are (their subscription with them)."""
    theirs = or_(Interaction.user_id == user_id, Interaction.chat_id == user_id)  # and their private chat's
    await session.execute(delete(Interaction).where(theirs))
    await session.execute(delete(CommentTrigger).where(CommentTrigger.user_id == user_id))
    await session.execute(delete(InboxUpdate).where(InboxUpdate.user_id == user_id))
    await session.execute(delete(OutboxReply).where(OutboxReply.user_id == user_id))
    await session.execute(delete(TapSentence).where(TapSentence.user_id == user_id))
    await session.execute(delete(QuizRun).where(QuizRun.user_id == user_id))
    await session.execute(delete(DeadLetter).where(DeadLetter.user_id == user_id))
    await session.execute(delete(BroadcastRecipient).where(BroadcastRecipient.user_id == user_id))
    await session.execute(delete(User).where(User.id == user_id))


async def write_all(db: Database, ops: Sequence[Write]) -> None:
    """Everything the background writer hands over, in one transaction: the users (latest details win) first,
    then the other writes in order, then the interaction rows."""
    async with db.sessions.begin() as session:
        entries = [op for op in ops if isinstance(op, InteractionEntry)]
        users = {e.user.id: e.user for e in entries if e.user is not None}
        for user in users.values():
            await _upsert_user(session, user)
        for op in ops:
            if isinstance(op, UserStarted):
                await _upsert_user(session, op.user, started=True)
            elif isinstance(op, UserUnreachable):
                values: dict[str, Any] = {"can_dm": False, **({"blocked": True} if op.blocked else {})}
                await session.execute(update(User).where(User.id == op.user_id).values(**values))
            elif isinstance(op, CommentClaimed):
                claim = _insert(session, CommentTrigger).values(post_key=op.post_key, user_id=op.user_id)
                await session.execute(claim.on_conflict_do_nothing())
            elif isinstance(op, LanguageChosen):
                await _upsert_user(session, op.user)
                chosen = update(User).where(User.id == op.user.id).values(chosen_language=op.language)
                await session.execute(chosen)
            elif isinstance(op, SubscriptionChanged):
                await _upsert_user(session, op.user)
                since = op.created_at if op.subscribed else None
                await session.execute(update(User).where(User.id == op.user.id).values(subscribed_at=since))
            elif isinstance(op, OwedReply):
                session.add(outbox_row(op))
            elif isinstance(op, OutboxSent):
                await session.execute(delete(OutboxReply).where(OutboxReply.id.in_(list(op.outbox_ids))))
            elif isinstance(op, TapSentenceKept):
                kept = _insert(session, TapSentence).values(
                    key=op.key, user_id=op.user_id, text=op.text, created_at=op.created_at
                )
                await session.execute(kept.on_conflict_do_nothing())
            elif isinstance(op, QuizAsked):
                if op.previous_poll_id is not None:
                    await session.execute(delete(QuizRun).where(QuizRun.poll_id == op.previous_poll_id))
                values = dict(
                    poll_id=op.poll_id, user_id=op.user_id, chat_id=op.chat_id, question=op.question,
                    right=op.right, asked_at=op.created_at,
                )  # fmt: skip
                await session.execute(_insert(session, QuizRun).values(**values).on_conflict_do_nothing())
            elif isinstance(op, QuizEnded):
                await session.execute(delete(QuizRun).where(QuizRun.poll_id == op.poll_id))
            elif isinstance(op, Forget):
                await session.flush()
                await _forget(session, op.user_id)
        session.add_all([_row(e) for e in entries])
        done = [op.update_id for op in ops if isinstance(op, UpdateDone)]
        if done:  # one statement for the batch: every update the bot handles ends here
            await session.execute(
                update(InboxUpdate).where(InboxUpdate.update_id.in_(done)).values(status="done", finished_at=utcnow())
            )
    if any(isinstance(op, Forget) for op in ops) and not await db.scrub():
        log.warning("a /forget is committed, but SQLite's write-ahead log could not be cut yet (readers)")


def _row(entry: InteractionEntry) -> Interaction:
    return Interaction(
        user_id=entry.user.id if entry.user else None,
        chat_id=entry.chat_id,
        chat_type=entry.chat_type,
        kind=_plain(entry.kind),
        trigger=entry.trigger,
        input_text=entry.input_text,
        model_name=entry.model_name,
        predictions=entry.predictions,
        top_prediction=_top_word(entry.predictions),
        latency_ms=entry.latency_ms,
        outcome=_plain(entry.outcome),
        answer_message_id=entry.answer_message_id,
        guide=entry.guide,
        post=entry.post,
        **({"created_at": entry.created_at} if entry.created_at else {}),
    )


def _plain(value: Any) -> Any:
    """A vocabulary member as the plain string it stands for (the database gets strings, whichever way the
    handler wrote them); anything else as it is."""
    return value.value if isinstance(value, Enum) else value


def _top_word(predictions: Any) -> str | None:
    try:
        return str(predictions[0][0]["token"])[:100]
    except (TypeError, IndexError, KeyError):
        return None


def outbox_row(owed: OwedReply) -> OutboxReply:
    return OutboxReply(chat_id=owed.chat_id, thread=owed.thread, user_id=owed.user_id, payload=owed.payload)
