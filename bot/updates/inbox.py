"""Nothing lost when the process dies: updates are stored before Telegram is told they were received.

python-telegram-bot confirms each batch of updates to Telegram with the *next* ``getUpdates`` call (its
``offset``), and with concurrent handling a whole burst is confirmed within a second, long before it is
answered. A process killed then (the OOM killer, ``docker kill``, a reboot) used to lose every request still in
flight: Telegram does not send a confirmed update again.

Here the polling bot's ``get_updates`` writes each fetched batch to the ``inbox`` table, in one transaction,
before returning it, so before the next poll can confirm it. A handler in the last group marks the update done
(through the background writer, in order with its interaction rows) once its handling has finished. In webhook
mode ``bot.http.server`` stores each update the same way before answering Telegram's request. At start-up, updates
left pending are handled first, oldest first; those older than ``INBOX_MAX_AGE_S`` are marked expired and
logged instead of answered late; those already handed on again at the last start that still did not finish are
handed on one at a time, and the one that then stops the bot again is parked (``MAX_REPLAYS``): kept and logged
once, never handed on again, while the others are answered. Semantics: at least once (a
reply can repeat after a crash), never silently dropped. Telegram re-sends what was fetched but not confirmed:
stored ids are not handed on twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection
from datetime import datetime, timedelta, timezone
from typing import Any

from telegram import Update
from telegram.ext import Application, ExtBot

from bot.context import Context
from bot.storage.repository import Inbox
from bot.storage.writes import UpdateDone

log = logging.getLogger(__name__)

STORE_RETRY_FIRST_S = 1.0
STORE_RETRY_MAX_S = 30.0

# Unfinished updates are handed on again at the next start, all at once. Those still unfinished at the start after
# that ("suspects": one of them may be what stops the bot, an out-of-memory kill, and replaying them all at every
# start would stop every start) are handed on one at a time, each counted just before it goes: the one that stops
# the bot is then the only one counted twice, and is parked at the next start; the others are answered.
MAX_REPLAYS = 2
SUSPECT_WAIT_S = 30.0  # how long a suspect has alone before the next one goes too (one that hangs holds no one up)
# Inline queries and button presses can be answered only for a few seconds: replayed later, the answer fails.
SHORT_LIVED = ("inline_query", "callback_query")
SHORT_LIVED_MAX_AGE_S = 10.0


class InboxBot(ExtBot):
    """The application's bot (``bot.app.build_application`` makes it), so updates, replies and the Updater share
    one bot with one set of defaults. In polling mode (``install``) its ``get_updates`` stores the batch first (and
    drops updates already stored), so a failure to store means the batch is fetched again; otherwise it is
    python-telegram-bot's ``ExtBot`` unchanged.

    Two things the Updater cannot know: a batch made only of updates already stored comes back empty, and the
    Updater moves its offset only past updates it is given, so the offset is moved on here (or it asked
    Telegram and the database for the same batch again at full speed); and a store that fails is waited out
    with backoff (1 s, doubling to 30 s), one log line a try without the updates, instead of python-telegram-
    bot's CRITICAL traceback at every turn of a tight loop."""

    # (python-telegram-bot freezes its bots after __init__; attributes named with "_" stay settable.)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inbox: Inbox | None = None
        self._on_poll: Callable[[], None] | None = None  # told of every answer from Telegram (updates flow)
        # Updates handed on and not finished, shared with the replay and hand_on_stored_elsewhere: once each.
        self._handed_on: set[int] = set()
        self._next_offset = 0  # past every update stored (handed on or not)
        self._backoff = STORE_RETRY_FIRST_S

    @property
    def handed_on(self) -> set[int]:
        return self._handed_on

    def store_polled_updates(
        self, inbox: Inbox, on_poll: Callable[[], None] | None = None, handed_on: set[int] | None = None
    ) -> None:
        """Polling mode: every batch ``get_updates`` fetches goes to ``inbox`` before it is handed on."""
        self._inbox = inbox
        self._on_poll = on_poll
        if handed_on is not None:
            self._handed_on = handed_on

    async def get_updates(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:  # type: ignore[override]
        if self._inbox is None:  # webhook mode, or a bot outside the runner
            return await super().get_updates(*args, **kwargs)
        if "offset" in kwargs and self._next_offset > (kwargs["offset"] or 0):
            kwargs["offset"] = self._next_offset
        updates = await super().get_updates(*args, **kwargs)
        if self._on_poll is not None:
            self._on_poll()
        if not updates:
            return updates
        try:
            new = await self._store(self._inbox, updates)
        except Exception as exc:
            log.warning(
                "could not store %d updates (%s); fetching them again in %.0f s",
                len(updates), type(exc).__name__, self._backoff,
            )  # fmt: skip
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, STORE_RETRY_MAX_S)
            return ()
        self._backoff = STORE_RETRY_FIRST_S
        self._next_offset = max(self._next_offset, max(u.update_id for u in updates) + 1)
        # Checked and marked with no wait between: an update another turn found meanwhile is not handed on twice.
        fresh = tuple(u for u in updates if u.update_id in new and u.update_id not in self._handed_on)
        self._handed_on.update(u.update_id for u in fresh)
        return fresh

    @staticmethod
    async def _store(inbox: Inbox, updates: tuple[Update, ...]) -> set[int]:
        return await inbox.store(
            [
                (u.update_id, json.dumps(u.to_dict(recursive=True)), u.effective_user.id if u.effective_user else None)
                for u in updates
            ]
        )


def install(
    application: Application, inbox: Inbox, on_poll: Callable[[], None] | None = None, handed_on: set[int] | None = None
) -> None:
    """Polling mode: the application's :class:`InboxBot` stores each fetched batch before the next poll confirms it."""
    bot = application.bot
    if not isinstance(bot, InboxBot):
        raise TypeError("the application's bot is not an InboxBot: build it with bot.app.build_application")
    bot.store_polled_updates(inbox, on_poll, handed_on)


async def mark_done(update: object, context: Context) -> None:
    """The last handler group: this update's handling has finished (whatever the handlers before did)."""
    if isinstance(update, Update):
        await context.bot_data.services.log(UpdateDone(update.update_id, datetime.now(timezone.utc)))


async def replay_unfinished(
    application: Application, inbox: Inbox, *, max_age_s: float, skip: Collection[int] = ()
) -> int:
    """Queue the updates a previous run fetched (or the webhook stored while starting) but did not finish;
    expire those older than ``max_age_s``; ``skip`` ids already queued. A ``skip`` that is a set is the one the
    webhook shares: each id queued here is added to it at once, so the webhook and the replay never both hand
    on the same update. Returns how many were queued. Call after ``application.start()`` and before polling."""
    now = datetime.now(timezone.utc)
    replay, suspects, expired, parked = [], [], [], []
    for row in await inbox.unfinished():
        if row.update_id in skip:
            continue
        received = row.received_at if row.received_at.tzinfo else row.received_at.replace(tzinfo=timezone.utc)
        payload = json.loads(row.payload)
        limit = SHORT_LIVED_MAX_AGE_S if any(kind in payload for kind in SHORT_LIVED) else max_age_s
        if now - received > timedelta(seconds=min(limit, max_age_s)):
            expired.append(row)
        elif row.attempts >= MAX_REPLAYS:
            parked.append(row)
        elif row.attempts > 0:
            suspects.append(row)
        else:
            replay.append(row)
    if expired:
        await inbox.expire([row.update_id for row in expired])
        log.warning("%d updates from before the restart are older than %.0f s: not answered", len(expired), max_age_s)
    if parked:
        await inbox.expire([row.update_id for row in parked], status="parked")
        for row in parked:
            kind = next((k for k in json.loads(row.payload) if k != "update_id"), "unknown")
            log.error(
                "update %s (%s) was handed on alone after two restarts and did not finish before the next one: "
                "parked, not handed on again (it may be what stopped the bot; the inbox keeps it)", row.update_id, kind,
            )  # fmt: skip
    # Counted before they are handed on: if one of them brings the bot down again, the next start knows.
    again = [row.update_id for row in replay if row.update_id not in skip]
    if again:
        await inbox.count_attempt(again)
    queued = 0
    for row in replay:
        if row.update_id in skip:  # handed on by the webhook while this replay ran
            continue
        if isinstance(skip, set):
            skip.add(row.update_id)
        await application.update_queue.put(Update.de_json(json.loads(row.payload), application.bot))
        queued += 1
    if queued:
        log.info("handling %d updates left unfinished by the previous run", queued)
    if suspects:
        log.warning(
            "%d updates handed on at the last start did not finish before this one: handing them on one at a time, "
            "to find the one that stops the bot", len(suspects),
        )  # fmt: skip
        application.create_task(_one_at_a_time(application, inbox, suspects, skip), name="inbox-suspects")
    return queued + len(suspects)


async def _one_at_a_time(application: Application, inbox: Inbox, suspects: list[Any], skip: Collection[int]) -> None:
    """Each suspect is counted, then handled alone (``SUSPECT_WAIT_S`` at most before the next one goes too)."""
    loop = asyncio.get_running_loop()
    for row in suspects:
        if not application.running:  # stopping: the rest wait in the inbox for the next start
            return
        if row.update_id in skip:  # handed on meanwhile (the webhook, another turn): once only
            continue
        if isinstance(skip, set):
            skip.add(row.update_id)
        await inbox.count_attempt([row.update_id])
        update = Update.de_json(json.loads(row.payload), application.bot)
        handling = application.create_task(application.process_update(update), update=update)
        until = loop.time() + SUSPECT_WAIT_S
        while not handling.done() and application.running and loop.time() < until:
            await asyncio.wait({handling}, timeout=0.5)


async def hand_on_stored_elsewhere(application: Application, inbox: Inbox, handed_on: set[int]) -> int:
    """Updates in the inbox that no one is handling: in webhook mode a load balancer hands Telegram's posts to
    any replica, and a standby stores what it gets without handing it on; a process that lost the active lock
    may have stored updates it did not hand on. The active process hands those on here (oldest first), once
    each: ``handed_on`` is the set the poller (or the endpoint) and the start-up replay share. Ids of updates
    finished since the last turn leave the set (a finished update is never pending again), so it holds only
    unfinished ones. Returns how many were handed on."""
    before = set(handed_on)
    pending = await inbox.pending_ids()
    handed_on -= before - pending
    new = sorted(pending - handed_on)
    if not new:
        return 0
    queued = 0
    for update_id, payload in await inbox.payloads(new):
        if not application.running:  # stopping: stop() waits for the queue to drain; this would keep it filling
            break
        if update_id in handed_on:  # the endpoint handed it on while this looked
            continue
        handed_on.add(update_id)
        await application.update_queue.put(Update.de_json(json.loads(payload), application.bot))
        queued += 1
    return queued
