"""The model worker's limits and warnings: one caller cannot take more than its share of the queue, and the
worker says so in its log when it listens in public without a token. (The 401s without WORKER_TOKEN are in
tests/serving/test_http_worker.py, on ``mlm-bot worker`` and Ray Serve alike.) Real uvicorn servers on loopback."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from models.engine.core import FillMaskEngine
from models.serving.client import RemoteFillMask, without_credentials
from models.serving.http_worker import warn_if_open
from models.settings import ModelSettings
from tests.support.worker import post, serve, wait_ready


class HeldForward:
    """The engine, with its forward pass held until ``gate`` opens: requests stay in the worker's queue."""

    def __init__(self, engine: FillMaskEngine, gate: threading.Event) -> None:
        self._engine, self._gate = engine, gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def forward(self, batch: Any) -> Any:
        self._gate.wait(10)
        return self._engine.forward(batch)


def test_one_caller_cannot_take_more_than_its_share_of_the_queue(bert_engine: FillMaskEngine) -> None:
    gate = threading.Event()
    with serve(lambda settings: HeldForward(bert_engine, gate), worker_caller_max_in_flight=4) as url:
        wait_ready(url)
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))  # another caller
        with ThreadPoolExecutor(4) as pool, other:
            held = pool.submit(post, url, {"inputs": ["the [MASK] sat ."] * 3})
            time.sleep(0.5)  # those three are in the queue now
            over = post(url, {"inputs": ["a [MASK] ran ."] * 2})
            assert over.status_code == 429 and over.json()["error_type"] == "busy"
            assert "3 sentences in the queue" in over.json()["error"]
            within = pool.submit(post, url, {"inputs": "a [MASK] ran ."})  # 3 + 1: still its share
            elsewhere = pool.submit(
                other.post, f"{url}/v1/fill-mask", json={"inputs": ["a [MASK] ran ."] * 4}
            )  # another caller has a share of its own
            time.sleep(0.3)
            gate.set()
            assert [f.result().status_code for f in (held, within, elsewhere)] == [200, 200, 200]
        assert post(url, {"inputs": ["a [MASK] ran ."] * 4}).status_code == 200, "the share is given back"


def test_the_worker_warns_when_it_listens_in_public_without_a_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    warn_if_open("127.0.0.1", ModelSettings())
    warn_if_open("::1", ModelSettings())
    warn_if_open("0.0.0.0", ModelSettings(worker_token="s3cret"))
    assert caplog.records == []
    warn_if_open("0.0.0.0", ModelSettings())
    assert "without WORKER_TOKEN" in caplog.text


def test_the_workers_address_is_logged_without_credentials() -> None:
    assert without_credentials("http://bot:s3cret@worker:8000/?token=s3cret") == "http://worker:8000/"
    client = RemoteFillMask("https://bot:s3cret@gpu.example.com:8443")
    assert "s3cret" not in client.shown_url and client.shown_url == "https://gpu.example.com:8443"
