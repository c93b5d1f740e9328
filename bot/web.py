"""The bot's HTTP server: ``/healthz`` and ``/metrics`` always, and in webhook mode the webhook (``bot.webhook``).

Starlette on uvicorn, in the bot's own event loop (python-telegram-bot's documented custom-webhook pattern, on
the ASGI stack the model worker already uses): ``METRICS_LISTEN:METRICS_PORT`` in polling mode,
``WEBHOOK_LISTEN:WEBHOOK_PORT`` in webhook mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.metrics import BotMetrics
from bot.storage import Database
from models.client import FillMaskService

if TYPE_CHECKING:
    from bot.webhook import Webhook

log = logging.getLogger(__name__)

POLL_STALE_S = 60.0  # a long poll returns every 10 s or sooner; a minute without one means polling is stuck
CHECK_TIMEOUT_S = 3.0


@dataclass
class Health:
    """What ``/healthz`` checks: updates flowing, the database reachable, the model ready."""

    database: Database
    model: FillMaskService
    webhook: bool
    started: bool = False  # the bot is taking updates (set when polling or the webhook starts)
    standby: bool = False  # ready, waiting for the active process on the same database to stop (bot.storage.leader)
    # What the start is waiting for right now (bot.runner sets it), so /healthz names it instead of guessing.
    phase: str = "waiting for Telegram to answer getMe"
    model_started: bool = False  # the model's load has begun (before, its check says what comes first)
    last_poll: float | None = None  # monotonic time of the last getUpdates answer (polling mode)
    webhook_problem: str | None = None  # what Telegram's getWebhookInfo last reported wrong (webhook mode)

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def updates(self) -> str | None:
        if self.standby:  # healthy: it takes over when needed (and in webhook mode stores what it is sent)
            return None
        if not self.started:
            return f"starting: {self.phase}"
        if self.webhook:
            return self.webhook_problem
        if self.last_poll is None or time.monotonic() - self.last_poll > POLL_STALE_S:
            ago = "never" if self.last_poll is None else f"{time.monotonic() - self.last_poll:.0f} s ago"
            return f"no answer from Telegram's getUpdates since {ago}"
        return None

    async def check(self) -> tuple[bool, dict[str, str]]:
        async def database() -> str | None:
            try:
                await asyncio.wait_for(self.database.ping(), CHECK_TIMEOUT_S)
            except Exception as exc:
                return f"unreachable ({type(exc).__name__})"
            return None

        async def model() -> str | None:
            if not self.model_started:
                return f"not loaded yet: {self.phase} first"
            try:
                return await asyncio.wait_for(self.model.ready(), CHECK_TIMEOUT_S)
            except Exception as exc:
                return f"no answer ({type(exc).__name__})"

        db_problem, model_problem = await asyncio.gather(database(), model())
        problems = {"updates": self.updates(), "database": db_problem, "model": model_problem}
        checks = {name: problem or "ok" for name, problem in problems.items()}
        if self.standby:
            checks["updates"] = "standby: another process on this database is active"
        return all(problem is None for problem in problems.values()), checks


def create_app(health: Health, metrics: BotMetrics, webhook: Webhook | None = None) -> Starlette:
    """``/healthz`` and ``/metrics``, and the webhook's route when there is one."""

    async def healthz(request: Request) -> Response:
        ok, checks = await health.check()
        return JSONResponse({"status": "ok" if ok else "unhealthy", "checks": checks}, status_code=200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics_endpoint, methods=["GET"])]
    if webhook is not None:
        routes.append(Route(webhook.path, webhook.endpoint, methods=["POST"]))
    return Starlette(routes=routes)


class _Server(uvicorn.Server):
    """uvicorn inside the bot's loop: the bot's own SIGTERM handling decides when to stop, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


class HttpServer:
    """Serves the Starlette app on ``host:port`` in this event loop until :meth:`close`."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server = _Server(
            uvicorn.Config(
                app,
                log_level="warning",
                log_config=None,  # its lines go through the bot's own handler, in LOG_FORMAT
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=2,
            )
        )
        self._socket: socket.socket | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        # Bound here, not by uvicorn: a port in use is an OSError the caller can explain, not uvicorn's exit.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {self.host}:{self.port} ({exc.strerror})") from None
        self._socket = sock
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="bot-http-server")
        while not self._server.started and not self._task.done():  # noqa: ASYNC110 - uvicorn offers a flag
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()

    async def close(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
