"""The worker's HTTP service on a real loopback port (uvicorn), its HF-compatible schema, and the client."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from huggingface_hub import InferenceClient

from models.engine.core import FillMaskEngine
from models.engine.errors import (
    NoMaskError,
    TargetNotSingleTokenError,
    TooManyMasksError,
    UnauthorizedError,
    WorkerUnavailableError,
)
from models.serving.client import RemoteFillMask, engine_from
from models.settings import ModelSettings
from tests.support.hf_compare import assert_same_hf
from tests.support.worker import AUTH, WORKER_TOKEN, gated_factory, post, serve, wait_ready


@contextlib.contextmanager
def ray_serve(**settings: object) -> Iterator[str]:
    """The same app on Ray Serve (``models.serving.ray_serve``), one replica, a local Ray instance on the CPU;
    yields the base URL of Serve's HTTP proxy."""
    ray = pytest.importorskip("ray")
    from ray import serve as ray_serve_api

    from models.serving.ray_serve import APP_NAME, build

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray_serve_api.start(http_options={"host": "127.0.0.1", "port": port})
        ray_serve_api.run(build(ModelSettings(**settings), replicas=1), name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        ray_serve_api.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module", params=["uvicorn", "ray-serve"])
def worker(request: pytest.FixtureRequest, bert_engine: FillMaskEngine, bert_dir) -> Iterator[str]:
    """Every contract test runs against ``mlm-bot worker``'s app under uvicorn and against the Ray Serve
    deployment of ``mlm-bot serve``: one API, two ways to run it, both asking for ``WORKER_TOKEN``."""
    limits = {"worker_max_body_bytes": 4096, "worker_max_inputs": 8, "worker_token": WORKER_TOKEN}
    if request.param == "uvicorn":
        with serve(lambda s: bert_engine, **limits) as url:
            wait_ready(url)
            yield url
    else:
        with ray_serve(model_name=str(bert_dir), model_device="cpu", model_dtype="float32", **limits) as url:
            wait_ready(url)
            yield url


def test_one_input_one_mask_is_a_list_of_dicts(worker: str, bert_engine: FillMaskEngine) -> None:
    r = post(worker, {"inputs": "the cat sat on the [MASK] ."})
    assert r.status_code == 200
    assert_same_hf(r.json(), bert_engine.fill("the cat sat on the [MASK] .").to_hf())
    assert set(r.json()[0]) == {"score", "token", "token_str", "sequence"}


def test_several_masks_give_lists_in_mask_order(worker: str, bert_engine: FillMaskEngine) -> None:
    text = "the [MASK] sat on the [MASK] ."
    r = post(worker, {"inputs": text, "parameters": {"top_k": 3}})
    body = r.json()
    assert r.status_code == 200 and len(body) == 2 and all(len(row) == 3 for row in body)
    assert [[p["token"] for p in row] for row in body] == [
        [p["token"] for p in row] for row in bert_engine.fill(text, top_k=3).to_hf()
    ]


def test_list_input_gives_one_answer_per_input(worker: str) -> None:
    texts = ["the [MASK] sat .", "the [MASK] sat on [MASK] .", "a dog [MASK] ."]
    body = post(worker, {"inputs": texts, "parameters": {"top_k": 2, "targets": None}}).json()
    assert len(body) == 3
    assert isinstance(body[0][0], dict) and isinstance(body[1][0], list) and isinstance(body[2][0], dict)
    single = post(worker, {"inputs": ["the [MASK] sat ."]}).json()
    assert len(single) == 1 and isinstance(single[0], list)  # a list of one stays a list of one


def test_targets_and_top_k(worker: str) -> None:
    body = post(
        worker, {"inputs": "the cat sat on the [MASK] .", "parameters": {"targets": ["mat", "dog"], "top_k": 5}}
    ).json()
    assert sorted(p["token_str"] for p in body) == ["dog", "mat"]
    body = post(worker, {"inputs": "the cat sat on the [MASK] .", "parameters": {"targets": "mat"}}).json()
    assert [p["token_str"] for p in body] == ["mat"]


def test_inference_client_round_trip(worker: str, bert_engine: FillMaskEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The session runs with HF_HUB_OFFLINE=1, which blocks every request of huggingface_hub, loopback too.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    client = InferenceClient(model=f"{worker}/v1/fill-mask", token=WORKER_TOKEN)  # sent as a bearer token
    out = client.fill_mask("the cat sat on the [MASK] .", top_k=3)
    expected = bert_engine.fill("the cat sat on the [MASK] .", top_k=3).to_hf()
    assert [o.token for o in out] == [e["token"] for e in expected]
    assert [o.token_str for o in out] == [e["token_str"] for e in expected]
    # fp32 sums in another order on a Ray replica (one torch thread per CPU it reserves): a few 1e-7 apart.
    assert [o.score for o in out] == pytest.approx([e["score"] for e in expected], rel=1e-5)
    targeted = client.fill_mask("the cat sat on the [MASK] .", targets=["mat"])
    assert [o.token_str for o in targeted] == ["mat"]


def test_long_input_is_marked_truncated(worker: str) -> None:
    text = "the cat sat on the [MASK] . " + "the dog ran to the house . " * 40
    r = post(worker, {"inputs": [text, "the [MASK] sat ."]})
    assert r.status_code == 200 and r.headers["x-truncated"] == "0"


@pytest.mark.parametrize(
    ("body", "status", "error_type", "words"),
    [
        (b"{not json", 400, "invalid_parameter", "not valid JSON"),
        (b"", 400, "invalid_parameter", "not valid JSON"),
        ({"text": "the [MASK]"}, 400, "invalid_parameter", "inputs"),
        ({"inputs": 42}, 400, "invalid_parameter", "inputs"),
        ({"inputs": []}, 400, "invalid_parameter", "empty"),
        ({"inputs": ""}, 400, "empty_input", "empty"),
        ({"inputs": "no mask at all"}, 400, "no_mask", "[MASK]"),
        ({"inputs": ["the [MASK] sat", "no mask"]}, 400, "no_mask", "inputs[1]"),
        ({"inputs": "[MASK] " * 6}, 400, "too_many_masks", "limit is 5"),
        ({"inputs": "the [MASK]", "parameters": {"top_k": 0}}, 400, "invalid_parameter", "1 to 50"),
        ({"inputs": "the [MASK]", "parameters": {"top_k": 51}}, 400, "invalid_parameter", "1 to 50"),
        ({"inputs": "the [MASK]", "parameters": {"top_k": "5"}}, 400, "invalid_parameter", "top_k"),
        ({"inputs": "the [MASK]", "parameters": {"topk": 5}}, 400, "invalid_parameter", "topk"),
        (
            {"inputs": "the [MASK]", "parameters": {"targets": ["zzzqqqxxx"]}},
            400,
            "target_not_single_token",
            "zzzqqqxxx",
        ),
        ({"inputs": "the [MASK] " + "x" * 5000}, 413, "input_too_long", "larger than"),
        ({"inputs": ["the [MASK]"] * 9}, 413, "input_too_long", "At most 8"),
    ],
)
def test_bad_requests_get_a_readable_4xx_and_the_worker_stays_up(worker: str, body, status, error_type, words) -> None:
    r = post(worker, body)
    assert r.status_code == status, r.text
    assert r.json()["error_type"] == error_type
    assert words in r.json()["error"]
    assert httpx.get(f"{worker}/healthz").status_code == 200


def test_unknown_routes_and_methods_answer_json(worker: str) -> None:
    assert httpx.get(f"{worker}/nope").json()["error"] == "Not Found"
    r = httpx.get(f"{worker}/v1/fill-mask", headers=AUTH)
    assert r.status_code == 405 and "error" in r.json()


def test_joint_endpoint(worker: str, bert_engine: FillMaskEngine) -> None:
    text = "the [MASK] sat on the [MASK] ."
    body = post(worker, {"inputs": text}, "/v1/fill-mask/joint").json()
    expected = bert_engine.fill_joint(text).to_dict()
    assert body["sequence"] == expected["sequence"]
    assert [s["token"] for s in body["steps"]] == [s["token"] for s in expected["steps"]]
    assert post(worker, {"inputs": [text]}, "/v1/fill-mask/joint").status_code == 400


def test_info(worker: str) -> None:
    info = httpx.get(f"{worker}/v1/info", headers=AUTH).json()
    assert info["mask_token"] == "[MASK]" and info["max_masks"] == 5 and info["dtype"] == "float32"


def test_metrics_count_outcomes_batches_and_latency(worker: str) -> None:
    post(worker, {"inputs": "the [MASK] sat ."})
    post(worker, {"inputs": "no mask"})
    text = httpx.get(f"{worker}/metrics", headers=AUTH).text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['mlm_requests_total{endpoint="fill-mask",outcome="ok"}'] >= 1
    assert samples['mlm_requests_total{endpoint="fill-mask",outcome="no_mask"}'] >= 1
    assert samples["mlm_batch_size_count"] >= 1
    assert samples['mlm_request_seconds_count{endpoint="fill-mask"}'] >= 2
    assert "mlm_queue_depth" in samples and samples["mlm_ready"] == 1


def test_without_the_token_fill_mask_info_and_metrics_answer_401(worker: str) -> None:
    refused = [
        post(worker, {"inputs": "the [MASK] sat ."}, headers={"content-type": "application/json"}),
        post(worker, {"inputs": "the [MASK] sat ."}, headers={"Authorization": "Bearer wrong"}),
        post(worker, {"inputs": "the [MASK] sat ."}, headers={"Authorization": f"Basic {WORKER_TOKEN}"}),
        post(worker, {"inputs": "the [MASK] sat ."}, "/v1/fill-mask/joint", headers={}),
        httpx.get(f"{worker}/v1/info"),
        httpx.get(f"{worker}/metrics"),
    ]
    assert [r.status_code for r in refused] == [401] * len(refused)
    assert refused[0].json()["error_type"] == "unauthorized" and refused[0].headers["www-authenticate"] == "Bearer"
    # Orchestrators' probes stay open, and say nothing but ready or not.
    assert httpx.get(f"{worker}/healthz").status_code == 200 and httpx.get(f"{worker}/readyz").status_code == 200


async def test_the_bots_client_sends_the_token_and_says_when_it_is_refused(
    worker: str, caplog: pytest.LogCaptureFixture
) -> None:
    right, wrong = RemoteFillMask(worker, token=WORKER_TOKEN), RemoteFillMask(worker, token="not-it", deadline=2)
    await right.start()
    await wrong.start()
    try:
        assert (await right.fill_mask("the cat sat on the [MASK] .")).masks[0]
        with pytest.raises(UnauthorizedError):
            await wrong.fill_mask("the cat sat on the [MASK] .")
        assert "refused this bot: set WORKER_TOKEN" in caplog.text
    finally:
        await right.close()
        await wrong.close()


def test_ready_only_after_the_model_is_loaded(bert_engine: FillMaskEngine) -> None:
    gate = threading.Event()
    with serve(gated_factory(bert_engine, gate)) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 503
        r = post(url, {"inputs": "the [MASK] sat ."})
        assert r.status_code == 503 and r.json()["error_type"] == "not_ready"
        gate.set()
        wait_ready(url)
        assert post(url, {"inputs": "the [MASK] sat ."}).status_code == 200


def test_a_model_that_fails_to_load_makes_the_worker_unhealthy(bert_engine: FillMaskEngine) -> None:
    """The orchestrator's open /healthz and /readyz say "failed"; why (a load error names paths and hub ids) only
    to a caller with the token."""
    gate = threading.Event()
    gate.set()
    with serve(gated_factory(bert_engine, gate, fail=True), worker_token=WORKER_TOKEN) as url:
        deadline = time.monotonic() + 5
        while httpx.get(f"{url}/healthz").status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert httpx.get(f"{url}/healthz").json() == {"status": "failed"}
        assert httpx.get(f"{url}/readyz").json() == {"status": "failed"}
        health = httpx.get(f"{url}/healthz", headers=AUTH).json()
        assert health["status"] == "failed" and "hub" in health["error"]


def test_an_open_readyz_names_no_model(bert_engine: FillMaskEngine) -> None:
    with serve(lambda settings: bert_engine, worker_token=WORKER_TOKEN) as url:
        wait_ready(url)
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
        assert httpx.get(f"{url}/readyz", headers=AUTH).json() == {"status": "ready", "model": "tiny"}
    with serve(lambda settings: bert_engine) as url:  # no token: the status only, to anyone
        wait_ready(url)
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}


async def test_remote_client_matches_the_engine_and_raises_typed_errors(
    worker: str, bert_engine: FillMaskEngine
) -> None:
    client = RemoteFillMask(worker, token=WORKER_TOKEN)
    await client.start()
    try:
        assert client.mask_token == "[MASK]"
        got = await client.fill_mask("the cat sat on the [MASK] .", top_k=3)
        assert_same_hf(got.to_hf(), bert_engine.fill("the cat sat on the [MASK] .", top_k=3).to_hf())
        joint = await client.fill_joint("the [MASK] sat on the [MASK] .")
        assert joint.sequence == bert_engine.fill_joint("the [MASK] sat on the [MASK] .").sequence
        with pytest.raises(NoMaskError):
            await client.fill_mask("no mask")
        with pytest.raises(TooManyMasksError):
            await client.fill_mask("[MASK] " * 9)
        with pytest.raises(TargetNotSingleTokenError):
            await client.fill_mask("the [MASK]", targets=["zzzqqqxxx"])
    finally:
        await client.close()


async def test_remote_client_retries_until_the_worker_is_ready(bert_engine: FillMaskEngine) -> None:
    gate = threading.Event()
    with serve(gated_factory(bert_engine, gate)) as url:
        client = RemoteFillMask(url, retries=6, backoff=0.05)
        await client.start()
        try:
            asyncio.get_running_loop().call_later(0.2, gate.set)
            result = await client.fill_mask("the [MASK] sat .")  # 503 not_ready first, then an answer
            assert len(result.masks[0]) == 5
        finally:
            await client.close()


async def test_remote_client_reports_an_unreachable_worker() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    client = RemoteFillMask(f"http://127.0.0.1:{port}", retries=2, backoff=0.01)
    await client.start()
    try:
        with pytest.raises(WorkerUnavailableError, match="cannot be reached"):
            await client.fill_mask("the [MASK] sat .")
    finally:
        await client.close()


def test_the_workers_model_loads_and_is_frozen_out_of_the_garbage_collectors_way(bert_dir) -> None:
    """``engine_from`` (the worker's and every Ray replica's) freezes what loading brought: CPython's full
    collections then skip those objects instead of walking them all with the GIL held (models/engine/accel/heap.py)."""
    gc.unfreeze()
    try:
        engine = engine_from(ModelSettings(model_name=str(bert_dir), model_device="cpu"))
        assert engine.fill("the cat sat on the [MASK] .").masks
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
