"""Public replies under a channel post, coalesced so a viral post cannot flood the group or stall the bot.

Telegram lets a bot send about 20 messages a minute to one group. A post that draws hundreds of "MLM" comments
would, with one reply per comment, queue replies for many minutes, and each waiting reply would hold one of
the bot's update slots, so people pressing Start in private would wait behind them. Here the handler only
adds the commenter and returns at once; one task per post sends a reply to the latest comment that names
everyone who asked since the previous reply. The "get the guide" button is the same for everyone under a post
(its deep link names the post, not the person), so one message serves them all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from cachetools import TTLCache
from markupsafe import Markup
from telegram import Bot, InlineKeyboardMarkup, ReplyParameters
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.helpers import mention_html

from bot.storage.vocabulary import Outcome
from bot.storage.writes import InteractionEntry, OutboxSent, OwedReply, UserInfo
from bot.text.render import Renderer

log = logging.getLogger(__name__)

MAX_NAMES = 20  # per reply; more waiting commenters get the next one
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
SETTLED_KEPT = 10_000  # outbox ids of replies sent lately, whose rows may take a moment to go


@dataclass(frozen=True)
class Commenter:
    message_id: int
    name: str | None  # None for a comment sent as a channel: no one to mention
    user_id: int | None
    entry: InteractionEntry  # logged once the reply is out
    outbox_id: int | None = None  # the outbox row that keeps the reply owed until Telegram took it


@dataclass(frozen=True)
class Unsent:
    """A reply still owed when the bot stopped: written to the outbox, sent after the next start."""

    chat_id: int
    thread: int
    commenter: Commenter
    keyboard: InlineKeyboardMarkup
    guide: str = ""  # the guide's slug: under one post, the commenters of each guide get their own reply


class CommentReplies:
    def __init__(
        self,
        renderer: Renderer,
        log_interaction: Callable[[InteractionEntry | OutboxSent], Awaitable[None]],
        *,
        gather_seconds: float = 1.0,
        remove_owed: Callable[[tuple[int, ...]], Awaitable[None]] | None = None,
        guide_name: Callable[[str, str], str] | None = None,
    ) -> None:
        self._renderer = renderer
        # (slug, language) -> the guide's short name ("your MLM guide is ready"); set once the guides are loaded.
        self.guide_name = guide_name or (lambda slug, language: slug.upper())
        self._log = log_interaction
        self._remove_owed = remove_owed
        self.gather_seconds = gather_seconds
        self._bot: Bot | None = None
        # By (chat, thread, guide): one reply names everyone under a post who asked for the same guide.
        self._pending: dict[tuple[int, int, str], list[Commenter]] = {}
        self._keyboards: dict[tuple[int, int, str], InlineKeyboardMarkup] = {}
        self._tasks: dict[tuple[int, int, str], asyncio.Task] = {}
        self._sending: dict[tuple[int, int, str], list[Commenter]] = {}
        # Sent (or dropped by /forget) while their outbox rows may still be there: not to be taken up again.
        self._settled: TTLCache[int, None] = TTLCache(SETTLED_KEPT, ttl=3600)

    def start(self, bot: Bot) -> None:
        self._bot = bot

    def add(
        self, chat_id: int, thread: int, commenter: Commenter, keyboard: InlineKeyboardMarkup, guide: str = ""
    ) -> None:
        """Queue a reply for this commenter; returns at once."""
        key = (chat_id, thread, guide)
        self._pending.setdefault(key, []).append(commenter)
        self._keyboards[key] = keyboard
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._serve(key), name=f"comment-replies-{chat_id}-{thread}")

    def known_ids(self) -> set[int]:
        """The outbox rows this process is sending or has sent: the active process takes up any others."""
        queued = [*self._pending.values(), *self._sending.values()]
        return {c.outbox_id for batch in queued for c in batch if c.outbox_id is not None} | set(self._settled)

    async def _sent(self, outbox_ids: tuple[int, ...]) -> None:
        """The outbox rows of replies Telegram took: deleted now (the window in which a kill sends a reply twice
        is this one statement); if the database cannot right now, through the writer, which retries."""
        for outbox_id in outbox_ids:
            self._settled[outbox_id] = None
        if self._remove_owed is not None:
            try:
                await self._remove_owed(outbox_ids)
                return
            except Exception as exc:
                log.warning("could not remove %d sent replies from the outbox now (%s)", len(outbox_ids), exc)
        await self._log(OutboxSent(outbox_ids, datetime.now(timezone.utc)))

    def forget(self, user_id: int) -> None:
        """/forget: a reply still waiting no longer names them (the others under the post still get it)."""
        for waiting in self._pending.values():
            for c in waiting:
                if c.user_id == user_id and c.outbox_id is not None:
                    self._settled[c.outbox_id] = None  # its row goes with the rest of their data
            waiting[:] = [c for c in waiting if c.user_id != user_id]

    async def close(self, timeout: float = 30.0) -> list[Unsent]:
        """Send what is waiting without the gathering pause, for at most ``timeout`` seconds (Telegram allows
        about 20 messages a minute per group: a backlog can take minutes), then stop. Returns the replies not
        sent by then (those being sent at that moment too: at least once) that have no outbox row yet (owed while
        the database was away), for the next start to send; the others' rows are in the outbox already."""
        self.gather_seconds = 0
        tasks = list(self._tasks.values())
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        unsent = [
            Unsent(key[0], key[1], commenter, self._keyboards[key], key[2])
            for key in list(self._tasks)
            for commenter in self._sending.get(key, []) + self._pending.get(key, [])
            if commenter.outbox_id is None
        ]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if unsent:
            log.warning("shutdown: %d comment replies kept for the next start", len(unsent))
        return unsent

    async def _serve(self, key: tuple[int, int, str]) -> None:
        delay = RETRY_FIRST_S
        try:
            while self._pending.get(key):
                await asyncio.sleep(self.gather_seconds)  # let the comments of the same moment come together
                batch, self._pending[key] = self._pending[key][:MAX_NAMES], self._pending[key][MAX_NAMES:]
                self._sending[key] = batch
                sent = await self._reply(key, batch)
                self._sending.pop(key, None)
                if sent:
                    delay = RETRY_FIRST_S
                    continue
                # Telegram could not take it right now: the commenters wait for the next try, never dropped.
                self._pending[key] = batch + self._pending[key]
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        finally:
            self._pending.pop(key, None)
            self._sending.pop(key, None)
            self._keyboards.pop(key, None)
            self._tasks.pop(key, None)

    async def _reply(self, key: tuple[int, int, str], batch: list[Commenter]) -> bool:
        """One reply naming the batch, under the latest of their comments; if that comment is gone, under the
        thread's root (the group's copy of the post). Never into the group's main chat: a discussion group
        without topics has no thread id, and a reply is the only way into the thread. False if Telegram could
        not take it now (try again later)."""
        assert self._bot is not None, "CommentReplies.start(bot) was not called"
        mentions = [Markup(mention_html(c.user_id, c.name)) for c in batch if c.name and c.user_id is not None]
        # Public, and for several people at once: the bot's default language, not one commenter's choice.
        language = self._renderer.default_language
        name = self.guide_name(key[2], language)
        text = self._renderer.html("comment_reply", language=language, mentions=mentions, guide_name=name)
        latest = max(c.message_id for c in batch)
        outcome = Outcome.BUTTON
        # The latest comment, then the thread's root (none for comments outside a thread: NO_THREAD, 0).
        for target in dict.fromkeys(t for t in (latest, key[1]) if t):
            try:
                await self._bot.send_message(
                    key[0],
                    text,
                    reply_markup=self._keyboards[key],
                    reply_parameters=ReplyParameters(target, allow_sending_without_reply=False),
                )
                break
            except BadRequest as exc:
                if "replied not found" in exc.message.lower():
                    continue
                log.error("Telegram refused a reply under post %s in chat %s: %s", key[1], key[0], exc.message)
                outcome = Outcome.REPLY_FAILED
                break
            except Forbidden as exc:  # the bot was removed from the group: no later try can work
                log.error("cannot write in chat %s any more (%s): dropping %d replies", key[0], exc.message, len(batch))
                outcome = Outcome.REPLY_FAILED
                break
            except TelegramError as exc:  # network trouble, Telegram's 5xx, flood limits past the retries
                log.warning("reply under post %s in chat %s failed (%s); trying again", key[1], key[0], exc)
                return False
        else:
            log.warning("the post %s in chat %s and its comments are gone: no reply", key[1], key[0])
            outcome = Outcome.THREAD_GONE
        for commenter in batch:
            await self._log(replace(commenter.entry, outcome=outcome))
        owed_rows = tuple(c.outbox_id for c in batch if c.outbox_id is not None)
        if owed_rows:  # done with (sent, or refused for good): at once, so a kill now sends it again rarely
            await self._sent(owed_rows)
        return True


def owed(unsent: Unsent) -> OwedReply:
    """An unsent reply as a write for the outbox."""
    c = unsent.commenter
    entry = dataclasses.asdict(c.entry)
    payload = {
        "message_id": c.message_id,
        "name": c.name,
        "user_id": c.user_id,
        "entry": {**entry, "created_at": c.entry.created_at.isoformat() if c.entry.created_at else None},
        "keyboard": unsent.keyboard.to_dict(),
        "guide": unsent.guide,
    }
    # Stamped with the comment's time: a /forget after the comment drops it, whenever it is handed over.
    created_at = c.entry.created_at or datetime.now(timezone.utc)
    return OwedReply(unsent.chat_id, unsent.thread, c.user_id, json.dumps(payload), created_at)


def restore(replies: CommentReplies, chat_id: int, thread: int, payload: str, outbox_id: int | None = None) -> None:
    """Queue a reply owed from the last run (its outbox row goes once it is sent)."""
    data = json.loads(payload)
    entry = data["entry"]
    entry["user"] = UserInfo(**entry["user"]) if entry.get("user") else None
    entry["created_at"] = datetime.fromisoformat(entry["created_at"]) if entry.get("created_at") else None
    commenter = Commenter(data["message_id"], data["name"], data["user_id"], InteractionEntry(**entry), outbox_id)
    keyboard = InlineKeyboardMarkup.de_json(data["keyboard"], None)
    replies.add(chat_id, thread, commenter, keyboard, str(data.get("guide") or ""))
