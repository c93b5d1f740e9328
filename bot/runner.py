"""``mlm-bot run``: start the model, the database and the bot; stop cleanly on SIGINT/SIGTERM.

``serve`` is the whole life of the bot as one coroutine, so the end-to-end tests run exactly this code
(with a fake Bot API server as ``TELEGRAM_API_BASE_URL``) and only the signal wiring differs.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from telegram import Update

from bot.app import build_application, register_commands, schedule_jobs
from bot.comment_replies import CommentReplies
from bot.limits import UserGate
from bot.render import Renderer
from bot.services import BotServices
from bot.settings import BotSettings
from bot.storage import Database, Repository
from bot.storage.writer import InteractionWriter
from models.client import FillMaskService, create_fill_mask_service

log = logging.getLogger(__name__)


def quiet_http_loggers() -> None:
    """httpx logs every request URL at INFO, and Bot API URLs contain the token: keep it at WARNING, whatever
    level the rest of the logging runs at."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def serve(settings: BotSettings, stop: asyncio.Event, *, model: FillMaskService | None = None) -> None:
    quiet_http_loggers()
    database = Database(settings.database_url)
    await database.migrate()
    model = model or create_fill_mask_service(settings)
    repo = Repository(database)
    writer = InteractionWriter(repo.interactions)
    renderer = Renderer()
    comment_replies = CommentReplies(renderer, writer.log)
    services = BotServices(
        settings=settings,
        model=model,
        repo=repo,
        writer=writer,
        renderer=renderer,
        predict_gate=UserGate(settings.predictions_per_minute),
        inline_gate=UserGate(settings.inline_queries_per_minute, one_at_a_time=False),
        comment_replies=comment_replies,
    )
    application = build_application(settings, services)
    comment_replies.start(application.bot)
    log.info("loading the model %s ...", settings.model_name)
    await model.start()
    await writer.start()
    try:
        async with application:  # initialize (getMe) ... shutdown
            await register_commands(application, services)
            await application.start()
            schedule_jobs(application)
            await application.updater.start_polling(allowed_updates=Update.ALL_TYPES)
            log.info("@%s is up (model %s)", application.bot.username, model.model_name)
            await stop.wait()
            log.info("stopping: no new updates; finishing the ones in progress")
            await application.updater.stop()
            await application.stop()  # lets every update already fetched finish
            await comment_replies.close()  # the public replies those updates queued
    finally:
        await writer.close()  # flush the interaction log
        log.info("interaction log flushed (%d written)", writer.written)
        await model.close()
        await database.close()


def run(settings: BotSettings) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
