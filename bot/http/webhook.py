"""Webhook mode: Telegram posts each update to ``WEBHOOK_URL``; the bot's HTTP server (``bot.http.server``) receives it.

The endpoint:

- answers 403 to a request without the right ``X-Telegram-Bot-Api-Secret-Token`` (compared in constant time),
  413 to a body over 1 MiB, 400 to a body that is not an update; none of them is handled;
- stores the update in the inbox *before* answering 200: Telegram forgets an update once it has its 200 and
  sends it again after any other answer, so an update whose handling a crash cut short is replayed from the
  inbox at the next start, and one the database could not store (locked, unreachable) gets 503 and comes again;
- while the bot is starting (loading its model) or stopping, stores the update and answers 200 without handing
  it on: the start-up replay of the inbox hands it to the handlers. (A 503 would have Telegram retry on its own
  schedule, slower and slower: minutes of silence after each restart.)
- hands an update Telegram delivers twice (it does, after a timeout) to the handlers once.

The secret is ``WEBHOOK_SECRET``, or derived from the token (``BotSettings.webhook_secret_value``): the same on
every start and every replica, so Telegram's deliveries with the secret it has are never refused by a restart.
At start, before the model loads, the bot registers the webhook (``setWebhook`` with the secret), then asks
Telegram every minute
(``getWebhookInfo``) whether its deliveries arrive, so a proxy that is down or another instance that took the
webhook over shows on ``/healthz``.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from telegram import Update, WebhookInfo
from telegram.error import BadRequest, NetworkError, TelegramError
from telegram.ext import Application
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from bot.config import StartupError
from bot.http.health import Health
from bot.storage.repository import Inbox

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1 << 20  # Telegram's updates are a few kB; anything near this is not from Telegram
CHECK_EVERY_S = 60.0


@dataclass
class Webhook:
    url: str
    path: str  # the URL's path: the route the bot's server answers on (a reverse proxy passes it on)
    secret: str
    application: Application
    inbox: Inbox
    accepting: bool = False  # hand updates on: between application.start() and the start of the shutdown
    # Updates handed on and not finished: shared with the start-up replay and the active process's look for
    # updates other processes stored (bot.updates.inbox), so each is handed on once, whoever finds it first.
    handed_on: set[int] = field(default_factory=set)

    async def endpoint(self, request: Request) -> Response:
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), self.secret.encode()):
            return _refuse(403, "wrong or missing secret token")
        length = request.headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > MAX_BODY):
            return _refuse(413, "body too large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _refuse(413, "body too large")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _refuse(400, "the body is not JSON")
        if not isinstance(data, dict) or type(data.get("update_id")) is not int:
            return _refuse(400, "the body is not a Telegram update")
        try:
            update = Update.de_json(data, self.application.bot)
        except Exception:
            return _refuse(400, "the body is not a Telegram update")
        try:
            sender = update.effective_user.id if update.effective_user else None
            new = await self.inbox.store([(update.update_id, body.decode(), sender)])
        except Exception as exc:
            log.warning("could not store update %s (%s): Telegram will send it again", update.update_id, exc)
            return _refuse(503, "could not store the update")
        # Not a second delivery of one already stored; and only once the bot is running (before, the start-up
        # replay hands it on; while stopping, the next start's). Checked after the store, so none falls between.
        if update.update_id in new and self.accepting:
            if update.update_id in self.handed_on:  # the start-up replay (or the look at the inbox) took it already
                return Response(status_code=200)
            self.handed_on.add(update.update_id)  # checked and marked with no wait between: never twice
            await self.application.update_queue.put(update)
        return Response(status_code=200)


def _refuse(status: int, reason: str) -> Response:
    return JSONResponse({"error": reason}, status_code=status)


def _worth_retrying(exc: BaseException) -> bool:
    # BadRequest is a NetworkError in python-telegram-bot; a refusal does not change on a retry.
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


async def register_webhook(application: Application, webhook: Webhook) -> None:
    """``setWebhook`` (a network failure is tried again a few times; a refusal is a :class:`StartupError`). Called
    before the model loads: from then on Telegram's deliveries are stored and confirmed, and answered once the
    bot is up."""
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_worth_retrying), stop=stop_after_attempt(5), wait=wait_exponential(1, max=10),
            reraise=True,
        ):  # fmt: skip
            with attempt:
                await application.bot.set_webhook(
                    webhook.url, secret_token=webhook.secret, allowed_updates=Update.ALL_TYPES
                )
    except BadRequest as exc:
        raise StartupError(f"Telegram refused WEBHOOK_URL {webhook.url}: {exc.message}") from None


def watch_webhook(application: Application, webhook: Webhook, health: Health) -> None:
    """The job that asks Telegram every minute how its deliveries go, for ``/healthz``."""

    async def check(context: object) -> None:
        try:
            info = await application.bot.get_webhook_info()
        except TelegramError as exc:
            log.warning("could not ask Telegram about the webhook: %s", exc)
            return
        health.webhook_problem = webhook_problem(info, webhook.url)
        if health.webhook_problem:
            log.warning("webhook: %s", health.webhook_problem)

    application.job_queue.run_repeating(check, interval=CHECK_EVERY_S, first=CHECK_EVERY_S / 6, name="webhook")


def webhook_problem(info: WebhookInfo, url: str, *, recent_s: float = 2 * CHECK_EVERY_S) -> str | None:
    """What is wrong with the webhook as Telegram sees it, or None. (``/healthz`` shows it: no addresses.)"""
    if info.url != url:
        where = "another address" if info.url else "nowhere"
        return f"Telegram posts updates to {where}, not to WEBHOOK_URL: another instance took over?"
    last_error = info.last_error_date
    if last_error is not None and (datetime.now(timezone.utc) - last_error).total_seconds() < recent_s:
        return f"Telegram cannot deliver ({info.last_error_message}); {info.pending_update_count} updates waiting"
    return None
