"""``mlm-bot run``: start the model, the database and the bot; stop cleanly on SIGINT/SIGTERM.

``serve`` is the whole life of the bot as one coroutine, so the end-to-end tests run exactly this code
(with a fake Bot API server as ``TELEGRAM_API_BASE_URL``) and only the signal wiring differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from telegram.error import InvalidToken, NetworkError
from telegram.ext import Application

from bot.app import build_application, register_commands, schedule_jobs
from bot.broadcaster import Broadcaster
from bot.budgets import ActionBudget, ModelCallLimit
from bot.config import BotSettings, StartupError
from bot.guides import GuideLibrary, GuideProblems
from bot.http.health import Health
from bot.http.metrics import BotMetrics
from bot.http.playground import mini_app
from bot.http.server import HttpServer, create_app
from bot.http.webhook import Webhook
from bot.logs import quiet_libraries, redact, set_pseudonym_key
from bot.public_replies import CommentReplies, owed, restore
from bot.services import BotServices, load_guides
from bot.storage import Database, Repository
from bot.storage.dead_letters import dead_letter_path_for
from bot.storage.leader import Leadership, UnusableLock, leadership_for
from bot.storage.writer import InteractionWriter
from bot.storage.writes import write_all
from bot.text.render import Renderer
from bot.transports import Polling, Transport, WebhookTransport
from bot.updates.inbox import hand_on_stored_elsewhere, replay_unfinished
from bot.updates.inbox import install as install_inbox
from models.engine.loading import ModelLoadError, resolve_source
from models.serving.client import FillMaskService, LocalFillMask, create_fill_mask_service

log = logging.getLogger(__name__)


RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


class TokenRefused(StartupError):
    """Telegram answered that the token is not valid."""


class LostLeadership(Exception):
    """Another process became the active one (this one lost the database's lock): this one stood down, and
    ``run`` starts it again as a standby."""


# Said with the first "Telegram is unreachable" line: what to look at.
UNREACHABLE_HINT = (
    "check this machine's network and DNS, the proxy if it needs one (HTTPS_PROXY), and TELEGRAM_API_BASE_URL "
    "if it is set"
)
ADOPT_EVERY_S = 1.0  # the active process looks for work other processes left in the database this often


async def connect_to_telegram(application: Application, settings: BotSettings, stop: asyncio.Event) -> bool:
    """``getMe`` until Telegram answers: True once it has, False if told to stop while waiting. A refused token
    raises :class:`TokenRefused` at once; an unreachable Telegram is one log line per try, with backoff (1 s,
    2 s, ... up to a minute), not an exit: a bot started before the network is up should come up with it."""
    delay = RETRY_FIRST_S
    api = settings.telegram_api_base_url
    while not stop.is_set():
        try:
            await application.initialize()
            return True
        except InvalidToken as exc:
            raise TokenRefused(
                f"Telegram refused TELEGRAM_BOT_TOKEN ({exc.message}): copy the token again from @BotFather"
            ) from None
        except NetworkError as exc:
            reason = str(exc).replace(settings.token(), "<token>")
            hint = "" if delay > RETRY_FIRST_S else f" ({UNREACHABLE_HINT})"
            log.error("Telegram is unreachable at %s (%s); trying again in %.0f s%s", api, reason, delay, hint)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except asyncio.TimeoutError:
            delay = min(delay * 2, RETRY_MAX_S)
    return False


def describe_storage(url: str) -> str:
    """Where the interaction log lives, for the start-up log: an SQLite file as an absolute path."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return f"SQLite file {Path(parsed.database).resolve()}"
    return parsed.render_as_string(hide_password=True)


def describe_env_file() -> str:
    env = Path(".env").resolve()
    return (
        f"settings from the environment and {env}"
        if env.is_file()
        else f"settings from the environment ({env} not found)"
    )


async def serve(settings: BotSettings, stop: asyncio.Event, *, model: FillMaskService | None = None) -> None:
    quiet_libraries(settings.log_updates)  # no token, no update's text in any line, whatever LOG_LEVEL says
    set_pseudonym_key(settings.token())
    log.info("%s; interaction log: %s", describe_env_file(), describe_storage(settings.database_url))
    renderer = Renderer(
        settings.mlm_bot_templates, default_language=settings.default_language, creator_gender=settings.creator_gender
    )
    try:  # before the database and the model: a broken page is the creator's to fix, said at once
        guides = await asyncio.to_thread(load_guides, settings, renderer)
    except GuideProblems as exc:
        raise StartupError(
            "the guides have problems (mlm-bot guides check lists them too):\n" + "\n".join(map(str, exc.problems))
        ) from None
    for warning in guides.warnings:
        log.warning("guides: %s", warning)
    database = Database(settings.database_url)
    leader = leadership_for(settings.database_url)
    try:
        # Migrations run under the active process's lock, never while another version of the bot is serving.
        try:
            if await leader.try_acquire():
                await database.migrate()
        except UnusableLock as exc:
            raise StartupError(str(exc)) from None
        await _serve(settings, stop, database, leader, model or create_fill_mask_service(settings), renderer, guides)
    finally:
        await leader.release()
        await database.close()


async def _serve(
    settings: BotSettings,
    stop: asyncio.Event,
    database: Database,
    leader: Leadership,
    model: FillMaskService,
    renderer: Renderer,
    guides: GuideLibrary,
) -> None:
    redact(settings.token())
    repo = Repository(database)
    writer = InteractionWriter(functools.partial(write_all, database), letters=repo.dead_letters)
    comment_replies = CommentReplies(renderer, writer.log, remove_owed=repo.outbox.remove)
    metrics = BotMetrics()
    metrics.watch_writer(writer)
    services = BotServices(
        settings=settings,
        model=model,
        repo=repo,
        writer=writer,
        renderer=renderer,
        predict_limit=ModelCallLimit(settings.predictions_per_minute),
        inline_limit=ModelCallLimit(settings.inline_queries_per_minute, one_at_a_time=False),
        budget=ActionBudget(settings.actions_per_minute, settings.actions_in_flight),
        comment_replies=comment_replies,
        metrics=metrics,
        guides=guides,
    )
    application = build_application(settings, services)
    health = Health(database, model, webhook=settings.webhook_url is not None, leader=leader)
    # The Mini App's API answers from the active process only: a standby has no writer running (and no budget
    # shared with the chat's); it says "busy, try again" and the proxy may send the retry to the active one.
    playground = mini_app(settings, services, active=lambda: health.serving) if settings.mini_app_url else None
    if playground is not None and not (settings.webhook_url or settings.metrics_port):
        raise StartupError("MINI_APP_URL needs the bot's HTTP server for /app: set METRICS_PORT (or WEBHOOK_URL)")
    handed_on: set[int] = set()  # updates handed on and not finished (bot.updates.inbox): each is handed on once
    transport: Transport
    if settings.webhook_url:
        webhook = Webhook(
            settings.webhook_url, settings.webhook_path, settings.webhook_secret_value(), application, repo.inbox,
            handed_on=handed_on,
        )  # fmt: skip
        redact(webhook.secret)
        transport = WebhookTransport(application, webhook, health)
        server = HttpServer(
            create_app(health, metrics, webhook, playground), settings.webhook_listen, settings.webhook_port
        )
    else:
        # every fetched update is stored before the next poll confirms it
        install_inbox(application, repo.inbox, on_poll=health.polled, handed_on=handed_on)
        transport = Polling(application)
        server = HttpServer(
            create_app(health, metrics, playground=playground), settings.metrics_listen, settings.metrics_port
        )
    if settings.webhook_url or settings.metrics_port:
        try:
            await server.start()  # /healthz says what the start is waiting for (Telegram, the model ...)
        except OSError as exc:
            which = "WEBHOOK_PORT" if settings.webhook_url else "METRICS_PORT (0 turns the server off)"
            raise StartupError(f"{exc}: is another program using the port? Set {which}") from None
        log.info("health and metrics on http://%s:%d/healthz and /metrics", server.host, server.port)
    reload_on_hangup = _listen_for_reload(services)
    try:
        await _run(settings, stop, services, application, health, transport, leader, handed_on)
    finally:
        reload_on_hangup()
        await server.close()
        if playground is not None:
            playground.loop_load.stop()


# What SIGHUP reloads: the guides of each bot serving in this process (one, but tests run several).
_RELOADERS: set[Callable[[], None]] = set()
_RELOADING: set[asyncio.Task] = set()


async def _reload_guides(services: BotServices, why: str) -> list[str] | None:
    """Read the guides again; None when done, else the problems (the old guides stay, and the log says why)."""
    try:
        await services.reload_guides()
    except GuideProblems as exc:
        log.error("guides not reloaded (%s): the old ones stay. Problems:\n%s", why, "\n".join(map(str, exc.problems)))
        return [str(p) for p in exc.problems]
    except Exception as exc:  # a folder gone, unreadable: the old guides keep answering
        log.error("guides not reloaded (%s): %s", why, exc)
        return [str(exc)]
    return None


def _listen_for_reload(services: BotServices) -> Callable[[], None]:
    """SIGHUP re-reads the guides (``docker compose kill -s HUP bot``); returns what stops listening."""
    loop = asyncio.get_running_loop()

    def reload() -> None:
        task = loop.create_task(_reload_guides(services, "SIGHUP"))
        _RELOADING.add(task)
        task.add_done_callback(_RELOADING.discard)

    def on_hangup() -> None:
        for each in list(_RELOADERS):
            each()

    hangup = getattr(signal, "SIGHUP", None)
    _RELOADERS.add(reload)
    if hangup is not None and len(_RELOADERS) == 1:
        try:
            loop.add_signal_handler(hangup, on_hangup)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or no signals here
            log.debug("SIGHUP cannot reload the guides in this process; /reload can")

    def stop_listening() -> None:
        _RELOADERS.discard(reload)
        if hangup is not None and not _RELOADERS:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(hangup)

    return stop_listening


async def _start_up(
    settings: BotSettings,
    stop: asyncio.Event,
    services: BotServices,
    application: Application,
    health: Health,
    transport: Transport,
    leader: Leadership,
) -> bool:
    """Start-up, up to serving: the model's source checked, Telegram reached, the model loaded, and (a standby)
    the database's lock waited for. False if told to stop meanwhile (the application shut down again)."""
    model, repo = services.model, services.repo
    # What can be checked without Telegram is checked first: a mistyped model folder is one line now, not after
    # the network comes back. The token is checked before the model loads: a second, not a minute of loading.
    if isinstance(model, LocalFillMask) and model.engine is None:
        try:
            await asyncio.to_thread(resolve_source, settings.model_name)
        except ModelLoadError as exc:
            raise StartupError(str(exc)) from None
    if not await connect_to_telegram(application, settings, stop):
        return False
    try:
        await transport.prepare()
        health.phase, health.model_started = "loading the model", True
        if not settings.model_worker_url:
            log.info("loading the model %s ...", settings.model_name)
        # the remote client logs "using the model worker at URL" itself
        if not await _unless_stopped(model.start(), stop):
            log.info("stopped while the model was loading")
            await application.shutdown()
            return False
        # The lock was taken before the model's load (minutes, the first time): still this process's?
        if leader.held and not await leader.confirm():
            log.warning("the active-process lock was lost while the model loaded: standing by instead")
        if not leader.held:  # a hot standby: the model is loaded; the database's lock decides when to serve
            health.standby, health.phase = True, "standing by"
            log.info(
                "another mlm-bot process is active on this database (or the database does not answer yet): "
                "standing by to take over"
            )
            if not await leader.acquire(stop):
                log.info("stopped while standing by")
                await application.shutdown()
                return False
            health.standby, health.phase = False, "taking over from the process that was active"
            log.info("the active process is gone: taking over")
            await repo.db.migrate()
            await _reload_guides(services, "taking over")  # edited since this standby started
    except BaseException:
        await application.shutdown()
        raise
    return True


async def _run(
    settings: BotSettings,
    stop: asyncio.Event,
    services: BotServices,
    application: Application,
    health: Health,
    transport: Transport,
    leader: Leadership,
    handed_on: set[int],
) -> None:
    """Start up, serve until told to stop (or until another process took the database's lock), stop."""
    if not await _start_up(settings, stop, services, application, health, transport, leader):
        return
    await _open_the_books(settings, services, application)
    budget = ShutdownBudget()  # one budget for the whole shutdown, from the moment the stop comes
    lost = asyncio.create_task(leader.watch(), name="leader-lock")
    try:
        async with application:  # initialize (done above, so a no-op) ... shutdown
            broadcaster = await _begin_serving(settings, services, application, health, transport, handed_on)
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({lost, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            budget.start(settings.shutdown_budget_s)
            await _stop_serving(settings, services, application, health, transport, broadcaster, budget, lost)
    finally:
        await _flush_and_release(services, leader, lost, budget)
    if lost.done() and not lost.cancelled():
        raise LostLeadership()


async def _open_the_books(settings: BotSettings, services: BotServices, application: Application) -> None:
    """What serving writes through: the public replies' sender and the interaction log's writer, started."""
    services.comment_replies.start(application.bot)
    await services.writer.start()
    try:  # an older version's dead-letter file: into the table (which /forget and retention clean), then deleted
        await services.repo.dead_letters.take_in_file(dead_letter_path_for(settings.database_url))
    except Exception as exc:
        log.warning("could not take in the old dead-letter file (%s); trying again at the next start", exc)


async def _begin_serving(
    settings: BotSettings,
    services: BotServices,
    application: Application,
    health: Health,
    transport: Transport,
    handed_on: set[int],
) -> Broadcaster:
    """From a started model to taking updates in: what the last run left (owed replies, unfinished updates)
    first, then the transport; returns the broadcaster it started."""
    repo = services.repo
    health.phase = "handling the updates left from before, then taking updates in"
    await register_commands(application, services)
    await services.channel_gate.probe(application.bot)  # REQUIRE_CHANNEL: usable, or one warning
    await application.start()
    schedule_jobs(application)
    for row in await repo.outbox.pending():  # replies owed since the last run
        restore(services.comment_replies, row.chat_id, row.thread, row.payload, row.id)
    transport.open()  # from now on handed on as they come; the replay skips those
    # The live set: updates the endpoint hands on while the replay runs are skipped by it (a copy taken
    # here, empty, would let them be handled twice).
    await replay_unfinished(application, repo.inbox, max_age_s=settings.inbox_max_age_s, skip=handed_on)
    adopt_left_work(application, services, handed_on)
    try:
        await transport.start()
    except BaseException:
        await application.stop()  # the context's shutdown refuses a running application
        raise
    health.started = True
    broadcaster = Broadcaster(services, application.bot, settings.broadcast_per_second)
    broadcaster.start()  # the active process sends what `mlm-bot broadcast` queued
    services.metrics.up.set(1)
    log.info("@%s is up (model %s; %s)", application.bot.username, services.model.model_name, transport.description)
    return broadcaster


async def _stop_serving(
    settings: BotSettings,
    services: BotServices,
    application: Application,
    health: Health,
    transport: Transport,
    broadcaster: Broadcaster,
    budget: ShutdownBudget,
    lost: asyncio.Task,
) -> None:
    """Within the budget: nothing new taken in, the updates in progress finished (or, once the lock is lost,
    left to the active process), the public replies they queued sent or put in the outbox."""
    await broadcaster.stop()  # the message on its way arrives; the rest wait for the next start
    services.metrics.up.set(0)
    health.stopping = True  # /healthz says so (503: a proxy sends no more); the Mini App's API stops
    if lost.done():  # another process is active now: stop handling at once, send nothing more
        log.error("lost the database's active-process lock: another process took over; standing down")
    # The jobs first: "adopt" would go on handing stored updates to a queue that python-telegram-bot's
    # stop() waits to see drained (the job queue stops only after that), and after a lost lock they would
    # go on working for a process that is no longer the active one.
    stop_jobs(application)
    await transport.stop()  # what comes now is stored, and handed on by the next start's replay
    if lost.done():
        # The active process now replays what is unfinished: this one drops what it has not begun and
        # cancels what it is handling (left pending in the inbox, for the other), instead of draining it.
        abandoned = abandon_updates(application, services)
        log.info("stopping: %d updates left to the process that is active now", abandoned)
    else:
        log.info("stopping within %.0f s: no new updates; finishing the ones in progress", settings.shutdown_budget_s)
    try:  # lets the updates already fetched finish, leaving a few seconds for the replies and the log
        await asyncio.wait_for(application.stop(), budget.left(reserve=4, at_least=0.5))
    except asyncio.TimeoutError:
        log.warning("updates still being handled when the budget ran out stay in the inbox for next time")
    # The public replies those updates queued, as far as the groups' allowances let them go in the
    # budget; the rest go to the outbox and out after the next start.
    # (None once the lock is lost: the active process sends them, from the outbox.)
    sending = 0.0 if lost.done() else budget.left(reserve=2)
    for unsent in await services.comment_replies.close(timeout=sending):
        await services.writer.log(owed(unsent))


async def _flush_and_release(
    services: BotServices, leader: Leadership, lost: asyncio.Task, budget: ShutdownBudget
) -> None:
    """The last steps, however serving ended: the interaction log flushed, the database's lock let go (a standby
    takes over then, with everything this process owed written), the models closed, within the budget."""
    writer = services.writer
    await writer.close(timeout=budget.left(reserve=1, at_least=1.0))  # flush the interaction log
    log.info("interaction log flushed (%d written)", writer.written)
    if not lost.done():
        lost.cancel()
    await leader.release()
    # The model and /compare's models, within what is left of the budget (a batch still running on them is not
    # waited for past it).
    closing = [services.model.close()] + ([services.compared.close()] if services.compared is not None else [])
    for close in closing:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(close, budget.left(at_least=0.5))


class ShutdownBudget:
    """The seconds the shutdown has, shared by its steps; unlimited until the stop comes (an error before then
    still flushes what it can, bounded by ``run``'s watchdog)."""

    UNSTARTED_S = 3600.0

    def __init__(self) -> None:
        self._deadline: float | None = None

    def start(self, seconds: float) -> None:
        self._deadline = asyncio.get_running_loop().time() + seconds

    def left(self, *, reserve: float = 0.0, at_least: float = 0.0) -> float:
        """What is left, keeping ``reserve`` seconds for the steps after this one, and never under ``at_least``."""
        if self._deadline is None:
            return self.UNSTARTED_S
        return max(at_least, self._deadline - asyncio.get_running_loop().time() - reserve)


def adopt_left_work(application: Application, services: BotServices, handed_on: set[int]) -> None:
    """The job that takes up what other processes on the database left for the active one: updates nobody is
    handling (webhook deliveries a standby stored, as a load balancer sends Telegram's posts to every replica;
    updates a process that stood down had stored), and public replies another process owed but did not send."""

    async def adopt(context: object) -> None:
        if not application.running:  # stopping: whatever is stored waits for the next active process
            return
        try:
            await hand_on_stored_elsewhere(application, services.repo.inbox, handed_on)
            for row in await services.repo.outbox.orphans(services.comment_replies.known_ids()):
                restore(services.comment_replies, row.chat_id, row.thread, row.payload, row.id)
        except Exception as exc:  # the database away for a moment: the next turn tries again
            log.warning("could not look for work left by other processes (%s)", type(exc).__name__)

    application.job_queue.run_repeating(adopt, interval=ADOPT_EVERY_S, first=ADOPT_EVERY_S, name="adopt")


def stop_jobs(application: Application) -> None:
    """No job starts from now on (one already running finishes; ``adopt`` hands nothing on once the application
    stops running)."""
    for job in application.job_queue.jobs():
        job.schedule_removal()


def abandon_updates(application: Application, services: BotServices) -> int:
    """Drop the updates queued and not begun, and cancel those being handled: all of them stay pending in the
    inbox. Returns how many."""
    queue = application.update_queue
    dropped = 0
    while not queue.empty():
        queue.get_nowait()
        queue.task_done()
        dropped += 1
    handling = list(services.handling)
    for task in handling:
        task.cancel()
    return dropped + len(handling)


async def _unless_stopped(work: Coroutine[Any, Any, Any], stop: asyncio.Event) -> bool:
    """Run ``work`` unless ``stop`` is set first (True if it finished). A stop while the model loads (minutes,
    the first time: a download) must not wait for the load: the load is cancelled (its thread, if any, is left
    to the exit's bound in ``run``)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task in done:
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    return False


def run(settings: BotSettings) -> None:
    """``mlm-bot run``: serve until SIGINT or SIGTERM, then end within SHUTDOWN_BUDGET_S of the signal. Work
    left in threads by then (a model still loading, a chart being drawn) is not waited for: after everything
    owed is written, the process exits without it."""
    stopped_at: list[float] = []
    served = threading.Event()  # serve() has returned: everything owed is written

    def watchdog() -> None:
        """The budget, whatever holds the exit up: threads of the default executor (which ``asyncio`` and the
        interpreter both wait for at exit), or a step that overran."""
        time.sleep(settings.shutdown_budget_s)
        log.warning(
            "still running %.0f s after the stop (work left in threads?): exiting now", time.monotonic() - stopped_at[0]
        )
        logging.shutdown()
        os._exit(0 if served.is_set() else 1)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if not stopped_at:
                stopped_at.append(time.monotonic())
                threading.Thread(target=watchdog, name="shutdown-watchdog", daemon=True).start()
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        while True:
            try:
                await serve(settings, stop)
                break
            except LostLeadership:
                if stopped_at:
                    break
                log.info("starting again, as a standby")
        served.set()

    asyncio.run(main())
