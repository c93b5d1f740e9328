"""A bot that cannot start as configured, and was asked to wait (``ON_CONFIG_ERROR=wait``, the image's default).

Exiting with code 2 is right in a shell; in a container it is a loop: the restart policy starts the same process
into the same error every few seconds, and ``docker compose ps`` shows ``Restarting`` or ``health: starting``,
never why. Waiting instead keeps the one error in the logs, serves ``/healthz`` as 503 ``misconfigured`` with the
problem (what ``mlm-bot health`` and Docker's healthcheck print), and exits 2 at the first SIGTERM or SIGINT. The
listener is the one the bot would have used, so it stays loopback-only unless the settings opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.http.server import HttpServer

log = logging.getLogger(__name__)


def misconfigured_app(problem: str) -> Starlette:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "misconfigured", "problem": problem}, status_code=503)

    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"])])


async def wait_misconfigured(problem: str, address: tuple[str, int] | None, stop: asyncio.Event | None = None) -> int:
    """Serve the problem on ``address`` (None or port 0: nowhere) until ``stop`` is set or a SIGTERM/SIGINT comes;
    returns 2, the exit code of a configuration error."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or not POSIX
            loop.add_signal_handler(signum, stop.set)
    server = None
    if address is not None and address[1]:
        server = HttpServer(misconfigured_app(problem), *address)
        try:
            await server.start()
        except OSError as exc:
            log.warning("%s: /healthz cannot say so", exc)
            server = None
    log.error(
        "not started: the configuration needs fixing (above). Waiting, as ON_CONFIG_ERROR=wait asks, so that this "
        "is not restarted into the same error; fix it and start again (docker compose up -d)."
    )
    try:
        await stop.wait()
    finally:
        if server is not None:
            await server.close()
    return 2
