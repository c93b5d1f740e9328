"""Nothing lost when the process dies: updates are stored before Telegram is told they were received.

python-telegram-bot confirms each batch of updates to Telegram with the *next* ``getUpdates`` call (its
``offset``), and with concurrent handling a whole burst is confirmed within a second, long before it is
answered. A process killed then (the OOM killer, ``docker kill``, a reboot) used to lose every request still in
flight: Telegram does not send a confirmed update again.

Here the polling bot's ``get_updates`` writes each fetched batch to the ``inbox`` table, in one transaction,
before returning it, so before the next poll can confirm it. A handler in the last group marks the update done
(through the background writer, in order with its interaction rows) once its handling has finished. In webhook
mode ``bot.web`` stores each update the same way before answering Telegram's request. At
start-up, updates left pending are handled first, oldest first; those older than ``INBOX_MAX_AGE_S`` are marked
expired and logged instead of answered late. Semantics: at least once (a reply can repeat after a crash), never
silently dropped. Telegram re-sends what was fetched but not confirmed: stored ids are not handed on twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from datetime import datetime, timedelta, timezone
from typing import Any

from telegram import Bot, Update
from telegram.ext import Application, Updater

from bot.services import Context
from bot.storage.repository import Inbox, UpdateDone

log = logging.getLogger(__name__)

# Inline queries and button presses can be answered only for a few seconds: replayed later, the answer fails.
SHORT_LIVED = ("inline_query", "callback_query")
SHORT_LIVED_MAX_AGE_S = 10.0


class InboxBot:
    """The bot as the Updater sees it: every other call goes to the real bot; ``get_updates`` stores the batch
    first (and drops updates already stored), so a failure to store means the batch is fetched again."""

    def __init__(self, bot: Bot, inbox: Inbox, on_poll: Callable[[], None] | None = None) -> None:
        self._bot = bot
        self._inbox = inbox
        self._on_poll = on_poll  # told of every answer from Telegram (the health check: updates are flowing)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bot, name)

    async def get_updates(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:
        updates = await self._bot.get_updates(*args, **kwargs)
        if self._on_poll is not None:
            self._on_poll()
        if not updates:
            return updates
        new = await self._inbox.store(
            [
                (u.update_id, json.dumps(u.to_dict(recursive=True)), u.effective_user.id if u.effective_user else None)
                for u in updates
            ]
        )
        return tuple(u for u in updates if u.update_id in new)


def install(application: Application, inbox: Inbox, on_poll: Callable[[], None] | None = None) -> None:
    """Give the application an Updater that polls through :class:`InboxBot`."""
    bot = InboxBot(application.bot, inbox, on_poll)
    application.updater = Updater(bot, application.update_queue)  # type: ignore[arg-type]


async def mark_done(update: object, context: Context) -> None:
    """The last handler group: this update's handling has finished (whatever the handlers before did)."""
    if isinstance(update, Update):
        await context.bot_data.services.log(UpdateDone(update.update_id, datetime.now(timezone.utc)))


async def replay_unfinished(
    application: Application, inbox: Inbox, *, max_age_s: float, skip: Collection[int] = ()
) -> int:
    """Queue the updates a previous run fetched (or the webhook stored while starting) but did not finish;
    expire those older than ``max_age_s``; ``skip`` ids already queued. Returns how many were queued. Call
    after ``application.start()`` and before polling starts."""
    now = datetime.now(timezone.utc)
    replay, expired = [], []
    for row in await inbox.unfinished():
        if row.update_id in skip:
            continue
        received = row.received_at if row.received_at.tzinfo else row.received_at.replace(tzinfo=timezone.utc)
        payload = json.loads(row.payload)
        limit = SHORT_LIVED_MAX_AGE_S if any(kind in payload for kind in SHORT_LIVED) else max_age_s
        (expired if now - received > timedelta(seconds=min(limit, max_age_s)) else replay).append(row)
    if expired:
        await inbox.expire([row.update_id for row in expired])
        log.warning("%d updates from before the restart are older than %.0f s: not answered", len(expired), max_age_s)
    for row in replay:
        await application.update_queue.put(Update.de_json(json.loads(row.payload), application.bot))
    if replay:
        log.info("handling %d updates left unfinished by the previous run", len(replay))
    return len(replay)
