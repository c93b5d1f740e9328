"""The Ray Serve deployment beyond the shared contract (the contract tests in ``tests/serving/test_http_worker.py`` run
against it too): how it is shaped, its config file for a cluster, and ``mlm-bot serve`` as a process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from models.settings import ModelSettings
from tests.support.bot_harness import free_port

pytest.importorskip("ray")

from ray.serve.schema import ServeDeploySchema

from models.serving.ray_serve import build, build_app

REPO = Path(__file__).resolve().parents[2]
MLM_BOT = str(Path(sys.executable).with_name("mlm-bot"))


def deployment_options(app) -> dict:
    deployment = app._bound_deployment
    return {
        "num_replicas": deployment.num_replicas,
        "autoscaling": deployment._deployment_config.autoscaling_config,
        "max_ongoing_requests": deployment.max_ongoing_requests,
        "ray_actor_options": deployment.ray_actor_options,
    }


def test_replicas_get_a_gpu_each_on_cuda_and_room_for_full_batches() -> None:
    options = deployment_options(build(ModelSettings(model_device="cuda", batch_max_size=64), replicas=3))
    assert options["num_replicas"] == 3 and options["autoscaling"] is None
    assert options["ray_actor_options"]["num_gpus"] == 1.0
    # A replica must hold more requests at once than one batch, or its batcher never fills a batch.
    assert options["max_ongoing_requests"] > 64
    cpu = deployment_options(build(ModelSettings(model_device="cpu"), replicas=1))
    assert cpu["ray_actor_options"]["num_gpus"] == 0.0
    # "auto": a GPU per replica where this process sees one (Ray hides GPUs from an actor that reserves none).
    auto = deployment_options(build(ModelSettings(model_device="auto"), replicas=1))
    assert auto["ray_actor_options"]["num_gpus"] == float(torch.cuda.is_available())


def test_autoscaling_between_the_fewest_and_the_most_replicas() -> None:
    options = deployment_options(
        build(ModelSettings(model_device="cpu", batch_max_size=16), replicas=1, max_replicas=4)
    )
    autoscaling = options["autoscaling"]
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 4)
    assert autoscaling.target_ongoing_requests == 16 < options["max_ongoing_requests"]


def test_the_cluster_config_file_is_valid_and_builds_the_app_once_it_has_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``deploy/ray-serve.yaml`` passes Ray's own schema, and its import path and args build the application, with a
    worker token: its proxy listens on every node, and without one the app refuses to build."""
    monkeypatch.delenv("WORKER_TOKEN", raising=False)
    config = yaml.safe_load((REPO / "deploy" / "ray-serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    assert schema.http_options.host == "0.0.0.0"
    (application,) = schema.applications
    assert application.import_path == "models.serving.ray_serve:build_app" and application.route_prefix == "/"
    with pytest.raises(ValueError, match="set WORKER_TOKEN"):
        build_app(application.args)
    assert build_app({**application.args, "allow_open": "true"}) is not None  # said in so many words
    monkeypatch.setenv("WORKER_TOKEN", "a-long-random-secret")
    options = deployment_options(build_app(application.args))
    assert options["autoscaling"].max_replicas == 4
    assert options["ray_actor_options"]["num_gpus"] == 1.0


def test_an_unknown_argument_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="modle_name"):
        build_app({"modle_name": "bert-base-uncased", "worker_token": "t"})


async def test_mlm_bot_serve_answers_the_api_and_stops_on_sigterm(bert_dir: Path, tmp_path: Path) -> None:
    """The command a user runs: a local Ray instance, the API on --port, a clean stop on SIGTERM."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        MLM_BOT, "serve", "--port", str(port), "--model", str(bert_dir), "--device", "cpu",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(240):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert process.returncode is None, (await process.stdout.read()).decode()[-3000:]
                await asyncio.sleep(0.5)
            answer = await client.post("/v1/fill-mask", json={"inputs": "the cat sat on the [MASK] ."})
            assert answer.status_code == 200 and len(answer.json()) == 5
            assert (await client.get("/v1/info")).json()["model"] == str(bert_dir)
        process.send_signal(signal.SIGTERM)
        output = (await asyncio.wait_for(process.communicate(), 120))[0].decode()
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert "graceful_shutdown failed" not in output  # what serve.shutdown() made Ray print on every stop


def test_stopping_mlm_bot_serve_on_a_shared_cluster_leaves_other_applications_running(
    bert_dir: Path, tmp_path: Path
) -> None:
    """Joined to a running Ray instance (``--address``), a stop deletes this application only: the proxy and
    another team's application on the same cluster keep answering."""
    import ray
    from ray import serve

    port = free_port()
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    process = None
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        @serve.deployment(ray_actor_options={"num_cpus": 0})
        class Other:
            def __call__(self, request) -> str:
                return "still here"

        serve.run(Other.bind(), name="other", route_prefix="/other")
        log = tmp_path / "serve.log"  # a file, not a pipe: Ray's chatter can never fill it and stall the process
        with log.open("w") as out:
            process = subprocess.Popen(
                [MLM_BOT, "serve", "--address", context.address_info["gcs_address"], "--port", str(port),
                 "--model", str(bert_dir), "--device", "cpu"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not _ready(f"{url}/readyz"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert httpx.post(f"{url}/v1/fill-mask", json={"inputs": "the [MASK] sat ."}, timeout=10).status_code == 200
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        assert process.returncode == 0, log.read_text()[-3000:]
        assert httpx.get(f"{url}/other", timeout=10).text == "still here"
        assert list(serve.status().applications) == ["other"]
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        serve.shutdown()
        ray.shutdown()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
