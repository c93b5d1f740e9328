"""The bot's HTTP server: ``/healthz`` and ``/metrics`` always, and in webhook mode the webhook (``bot.http.webhook``).

Starlette on uvicorn, in the bot's own event loop (python-telegram-bot's documented custom-webhook pattern, on
the ASGI stack the model worker already uses): ``METRICS_LISTEN:METRICS_PORT`` in polling mode,
``WEBHOOK_LISTEN:WEBHOOK_PORT`` in webhook mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.http.health import Health
from bot.http.metrics import BotMetrics
from bot.http.playground import Playground
from bot.http.webhook import Webhook

log = logging.getLogger(__name__)


def create_app(
    health: Health, metrics: BotMetrics, webhook: Webhook | None = None, playground: Playground | None = None
) -> Starlette:
    """``/healthz`` and ``/metrics``, the webhook's route when there is one, the playground's when it is a Mini App."""

    async def healthz(request: Request) -> Response:
        ok, checks = await health.check()
        return JSONResponse({"status": "ok" if ok else "unhealthy", "checks": checks}, status_code=200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics_endpoint, methods=["GET"])]
    if webhook is not None:
        routes.append(Route(webhook.path, webhook.endpoint, methods=["POST"]))
    if playground is not None:
        routes.extend(playground.routes())
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
