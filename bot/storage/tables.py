"""The schema, as typed SQLAlchemy models. Alembic migrations (bot/migrations) create and change it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class User(Base):
    """A Telegram user who wrote to the bot, commented, or used inline mode."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # Telegram user id
    username: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16))  # Telegram's language_code (their app's language)
    # The language they chose for the bot's messages (/language: english, hinglish); None: the bot's default.
    chosen_language: Mapped[str | None] = mapped_column(String(16))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # True once the user pressed Start: only then may the bot write to them first.
    can_dm: Mapped[bool] = mapped_column(Boolean, default=False)
    # True after Telegram said the user blocked the bot.
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    # When they asked to be told about new guides (/subscribe, "🔔"); None: never messaged unprompted.
    subscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Interaction(Base):
    """One thing a person did and what the bot answered."""

    __tablename__ = "interactions"
    __table_args__ = (
        Index("ix_interactions_created_at", "created_at"),
        Index("ix_interactions_kind", "kind"),
        Index("ix_interactions_kind_created_at", "kind", "created_at"),
        Index("ix_interactions_answer", "chat_id", "answer_message_id"),
    )

    # BIGINT on PostgreSQL; INTEGER on SQLite, where only "INTEGER PRIMARY KEY" autoincrements.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    user_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    chat_type: Mapped[str | None] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # guide, prediction, inline, comment, start, error
    trigger: Mapped[str | None] = mapped_column(String(64))
    input_text: Mapped[str | None] = mapped_column(Text)
    model_name: Mapped[str | None] = mapped_column(String(200))
    predictions: Mapped[Any | None] = mapped_column(JSON)
    # The first mask's best word, kept in a column of its own so "most predicted words" is a plain GROUP BY
    # on SQLite and PostgreSQL alike (no JSON functions).
    top_prediction: Mapped[str | None] = mapped_column(String(100))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(32), default="ok")
    # The bot's answer (a message in chat_id) this row is about: its buttons find their sentence here, whatever
    # Telegram sends with the press (it may leave out reply_to_message), after a restart and on another replica.
    answer_message_id: Mapped[int | None] = mapped_column(BigInteger)
    # The guide (its slug) a guide, lesson or comment row is about: several guides, each with its keywords.
    guide: Mapped[str | None] = mapped_column(String(32))
    # The post (its discussion thread, "<group>:<thread>") a keyword comment was under, or whose deep link a
    # person came by: the start of that person's funnel (stats --by-post).
    post: Mapped[str | None] = mapped_column(String(64), index=True)


class CommentTrigger(Base):
    """A keyword comment the bot handled; unique per post and user (the once-per-post rule)."""

    __tablename__ = "comment_triggers"
    __table_args__ = (UniqueConstraint("post_key", "user_id", name="uq_comment_triggers_post_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    post_key: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(BigInteger)  # the user, or the channel a comment was sent as
    handled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class InboxUpdate(Base):
    """An update as fetched from Telegram, stored before the next poll confirms it (so a crash loses none):
    ``pending`` until its handling has finished (``done``), ``expired`` if it waited too long to be worth
    answering, or ``parked`` if handing it on again after a restart did not finish either (it may be what
    killed the bot: kept for the operator, never handed on again)."""

    __tablename__ = "inbox"

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    payload: Mapped[str] = mapped_column(Text)
    # Who sent it (the update's "from"), so /forget finds their updates; None for updates with no person.
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    # PredictionStarts that handed it on again (bot.inbox.replay_unfinished).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxReply(Base):
    """A public comment reply still owed when the bot stopped (its group's allowance ran out before the
    shutdown budget did); the next start sends it and deletes the row."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    thread: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)  # the commenter the reply names
    payload: Mapped[str] = mapped_column(Text)


class TapSentence(Base):
    """A sentence offered for tap-to-mask, by the short key in its buttons' data (bot.handlers.tap): kept in the
    database so a tap works after a restart and on the process that took over."""

    __tablename__ = "tap_sentences"

    key: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class QuizRun(Base):
    """A quiz in progress, by the id of the poll waiting for an answer (bot.handlers.quiz)."""

    __tablename__ = "quiz_runs"

    poll_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    question: Mapped[int] = mapped_column(Integer)  # 0-based: the question this poll asks
    right: Mapped[int] = mapped_column(Integer)  # answered right before it
    asked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class DeadLetter(Base):
    """A write the database refused (bot.storage.dead_letters): kept for the operator, dropped by /forget and
    retention."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    error: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)  # whose it is: /forget deletes it
    payload: Mapped[str] = mapped_column(Text)  # the refused write, as JSON


class Broadcast(Base):
    """A message for the subscribers (``mlm-bot broadcast``): the active bot sends it, a row per recipient."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    text: Mapped[str] = mapped_column(Text)
    guide: Mapped[str | None] = mapped_column(String(32))  # a guide's button under it
    state: Mapped[str] = mapped_column(String(16), default="sending")  # sending, done, cancelled


class BroadcastRecipient(Base):
    """One subscriber of one broadcast. pending -> sending (marked before the call) -> sent; a row still
    "sending" after a crash may or may not have arrived: "unknown", never sent again. failed, blocked."""

    __tablename__ = "broadcast_recipients"
    __table_args__ = (Index("ix_broadcast_recipients_state", "broadcast_id", "state"),)

    broadcast_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
