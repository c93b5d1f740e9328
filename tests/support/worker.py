"""Shared test helpers (worker)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import uvicorn

from models.engine.core import FillMaskEngine
from models.serving.http_worker import create_app
from models.settings import ModelSettings

WORKER_TOKEN = "contract-test-token"


AUTH = {"Authorization": f"Bearer {WORKER_TOKEN}"}


@contextlib.contextmanager
def serve(factory: Callable[[ModelSettings], FillMaskEngine], **settings: object) -> Iterator[str]:
    """The real app under uvicorn on 127.0.0.1, in a thread; yields its base URL."""
    app = create_app(ModelSettings(model_name="tiny", **settings), engine_factory=factory)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "worker never became ready"
        time.sleep(0.02)


def post(url: str, body: object, path: str = "/v1/fill-mask", headers: dict | None = None) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    sent = {"content-type": "application/json", **AUTH} if headers is None else headers
    return httpx.post(url + path, content=content, headers=sent)


def gated_factory(engine: FillMaskEngine, gate: threading.Event, fail: bool = False) -> Callable:
    def factory(settings: ModelSettings) -> FillMaskEngine:
        gate.wait(10)
        if fail:
            raise OSError("bert-base-uncased is not a local folder and the hub cannot be reached")
        return engine

    return factory
