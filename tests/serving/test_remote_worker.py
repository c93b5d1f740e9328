"""The bot's side of a remote GPU worker (``MODEL_WORKER_URL``), against real HTTP servers on 127.0.0.1: a worker
that comes up after the bot, error details that survive HTTP, one deadline per request, and a worker whose
model fails to load."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from models.engine.core import FillMaskEngine
from models.engine.errors import BusyError, RequestTimeoutError, TooManyMasksError
from models.serving.client import RemoteFillMask
from tests.support.worker import gated_factory, post, serve, wait_ready

MLM_BOT = str(Path(sys.executable).with_name("mlm-bot"))


async def test_a_bot_started_before_its_worker_learns_the_model_once_it_is_up(
    roberta_engine: FillMaskEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gate = threading.Event()
    with serve(gated_factory(roberta_engine, gate)) as url:
        client = RemoteFillMask(url, model_name="roberta-base", deadline=5)
        await client.start()
        try:
            assert f"using the model worker at {url}" in caplog.text
            assert not client.info_known
            assert (client.model_name, client.mask_token) == ("roberta-base", "[MASK]")  # the bot's own guess
            gate.set()
            for _ in range(100):
                if client.info_known:
                    break
                await asyncio.sleep(0.05)
            assert client.info_known, "the client keeps asking the worker until it answers"
            assert (client.model_name, client.mask_token) == (roberta_engine.name, "<mask>")
        finally:
            await client.close()


async def test_error_details_survive_http(worker: str) -> None:
    client = RemoteFillMask(worker)
    await client.start()
    try:
        with pytest.raises(TooManyMasksError) as raised:
            await client.fill_mask("[MASK] " * 7)
        assert raised.value.details == {"count": 7, "limit": 5}
    finally:
        await client.close()


class _Counting(BaseHTTPRequestHandler):
    status = 503
    hang = False
    requests = 0

    def do_POST(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.hang:
            threading.Event().wait(5)
            return
        body = (
            b'{"error": "busy", "error_type": "busy"}'
            if self.status == 503
            else b'{"error": "late", "error_type": "timeout"}'
        )
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def fake_worker(status: int = 503, hang: bool = False) -> Iterator[type[_Counting]]:
    handler = type("Handler", (_Counting,), {"status": status, "hang": hang, "requests": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


async def _client(url: str, **kwargs) -> RemoteFillMask:
    client = RemoteFillMask(url, **kwargs)
    await client.start()
    client._info_task and client._info_task.cancel()  # only the request under test talks to the server
    return client


async def _requests_until(client: RemoteFillMask, handler: type[_Counting], error: type[Exception]) -> int:
    """Fill one sentence, expect ``error``, and return how many requests the worker saw for it."""
    handler.requests = 0
    try:
        with pytest.raises(error):
            await client.fill_mask("the [MASK] sat .")
    finally:
        await client.close()
    return handler.requests


async def test_a_busy_worker_is_retried_but_never_past_the_deadline() -> None:
    with fake_worker(503) as handler:
        client = await _client(handler.url, deadline=1.0, retries=50, backoff=0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await _requests_until(client, handler, BusyError) > 1, "503 is worth another try"
        assert loop.time() - started < 1.0 + 1.0, "the deadline bounds the retries"


async def test_the_workers_own_timeout_is_not_retried() -> None:
    with fake_worker(504) as handler:
        client = await _client(handler.url, deadline=5.0, retries=5, backoff=0.01)
        assert await _requests_until(client, handler, RequestTimeoutError) == 1


async def test_a_worker_that_does_not_answer_costs_one_deadline() -> None:
    with fake_worker(hang=True) as handler:
        client = RemoteFillMask(handler.url, deadline=0.5, retries=5)
        client._client = httpx.AsyncClient(base_url=handler.url)  # started without asking /v1/info
        assert await _requests_until(client, handler, RequestTimeoutError) == 1, "the deadline is spent"


def test_requests_to_a_worker_whose_model_failed_get_503_model_failed(bert_engine: FillMaskEngine) -> None:
    gate = threading.Event()
    gate.set()
    with serve(gated_factory(bert_engine, gate, fail=True)) as url:
        for _ in range(200):
            if httpx.get(f"{url}/healthz").status_code == 503:
                break
            threading.Event().wait(0.02)
        r = post(url, {"inputs": "the [MASK] sat ."})
        assert r.status_code == 503 and r.json()["error_type"] == "model_failed"
        assert "failed to load" in r.json()["error"]


def test_a_worker_whose_model_fails_to_load_exits_non_zero(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_")}
    done = subprocess.run(
        [MLM_BOT, "worker", "--port", str(port), "--model", "./no-such-model"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "error: MODEL_NAME=./no-such-model: no such folder" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def worker(bert_engine: FillMaskEngine) -> Iterator[str]:

    with serve(lambda s: bert_engine) as url:
        wait_ready(url)
        yield url
