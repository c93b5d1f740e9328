"""The model worker on Ray Serve: the same HTTP contract, on N replicas, on one machine or a cluster.

Each replica serves exactly the app of ``mlm-bot worker`` (``models.service.create_app``) as its ASGI ingress,
so the API is the same by construction: ``POST /v1/fill-mask`` in Hugging Face's schema, ``/v1/fill-mask/joint``,
``/v1/info``, ``/healthz``, ``/readyz``, ``/metrics`` (that replica's), the same errors. Each replica has its own
micro-batcher and, with ``num_gpus``, its own GPU. Ray's proxy sends a request to a replica with fewer than
``max_ongoing_requests`` in flight; that limit is set well above the batch size, or a replica's batcher could
never fill a batch. The model is loaded in the replica's constructor, so Ray routes to a replica only once it can
answer, and a replica whose model fails to load is restarted by Ray.

Three ways in: ``mlm-bot serve`` (a local Ray instance, or ``RAY_ADDRESS``), ``serve run
models.serving.ray_serve:build_app model_name=... replicas=2`` (Ray's application builder), and the config file
``deploy/ray-serve.yaml`` for ``serve deploy`` on a cluster (KubeRay's RayService takes the same file).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from ray.serve import Application

from models.serving.client import engine_from
from models.serving.http_worker import create_app
from models.settings import ModelSettings

APP_NAME = "mlm-bot"


@serve.ingress()
class FillMaskReplica:
    """One replica: the model, its batcher, and the worker's Starlette app in front of them."""

    async def __init__(self, settings: dict[str, Any]) -> None:
        # The settings come from the driver, not from the replica's machine: every node serves the same model.
        self.settings = ModelSettings(**settings)
        self.engine = await asyncio.to_thread(engine_from, self.settings)  # includes the warm-up forward

    def __serve_build_asgi_app__(self):  # Ray calls it after __init__, on the replica
        self.worker_app = create_app(self.settings, engine_factory=lambda settings: self.engine)
        return self.worker_app

    def check_health(self) -> None:
        """Ray's health check: a replica whose batcher failed is replaced."""
        state = self.worker_app.state.worker
        if state.load_error:
            raise RuntimeError(state.load_error)


def build(
    settings: ModelSettings,
    *,
    replicas: int = 1,
    max_replicas: int | None = None,
    gpus_per_replica: float | None = None,
    cpus_per_replica: float = 1.0,
) -> Application:
    """The Serve application: ``replicas`` replicas, or autoscaling between ``replicas`` and ``max_replicas``
    (a replica per ``BATCH_MAX_SIZE`` requests in flight). ``gpus_per_replica`` defaults to 1 when the model is
    set to run on CUDA (or ``auto`` where this process sees a GPU), else 0: Ray hides the GPUs from an actor
    that reserves none."""
    if gpus_per_replica is None:
        gpus_per_replica = 1.0 if _wants_gpu(settings.model_device) else 0.0
    options: dict[str, Any] = {
        "name": "FillMask",
        "ray_actor_options": {"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        # Well above one batch: a replica must hold enough requests at once for its batcher to fill batches.
        "max_ongoing_requests": max(4 * settings.batch_max_size, 64),
        "health_check_period_s": 10,
        "graceful_shutdown_timeout_s": 20,
        # A log line per request costs the CPU that tokenizes; the worker's /metrics counts requests instead.
        "logging_config": {"enable_access_log": False},
    }
    if max_replicas is not None and max_replicas > replicas:
        options["autoscaling_config"] = {
            "min_replicas": replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": settings.batch_max_size,
        }
    else:
        options["num_replicas"] = replicas
    values = settings.model_dump(mode="json")
    values["worker_token"] = settings.worker_token_value()  # dumped as "**********" otherwise
    return serve.deployment(FillMaskReplica, **options).bind(values)


def _wants_gpu(device: str) -> bool:
    if device.startswith("cuda"):
        return True
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return False


# A config file's application is served by Serve's proxy on every node (``http_options``: port 8000 on 0.0.0.0):
# without a token, anyone who reaches a node could use the GPUs. ``mlm-bot serve`` warns instead (it knows its
# --host); the builder cannot know where the proxy listens, so it refuses.
OPEN_REFUSED = (
    "the worker's API would answer anyone who reaches the cluster's port 8000: set WORKER_TOKEN (the same value as "
    "the bot's) in the environment that builds the app, or worker_token in the application's args; or "
    'allow_open: "true" where only you can reach that port'
)


def build_app(args: dict[str, str]) -> Application:
    """Ray's application builder (``serve run models.serving.ray_serve:build_app key=value ...`` and the ``args`` of a
    config file): ``replicas``, ``max_replicas``, ``gpus_per_replica``, ``cpus_per_replica``, ``allow_open``, and any
    model setting by its name (``model_name``, ``model_device``, ``batch_max_size``, ``worker_token`` ...); unset
    ones come from the environment of the process that builds the app, as for ``mlm-bot worker``. Without a worker
    token it refuses (``OPEN_REFUSED``) unless ``allow_open`` is ``"true"``."""
    args = dict(args)
    shape = {
        "replicas": int(args.pop("replicas", 1)),
        "max_replicas": int(args["max_replicas"]) if "max_replicas" in args else None,
        "gpus_per_replica": float(args["gpus_per_replica"]) if "gpus_per_replica" in args else None,
        "cpus_per_replica": float(args.pop("cpus_per_replica", 1.0)),
    }
    args.pop("max_replicas", None)
    args.pop("gpus_per_replica", None)
    allow_open = str(args.pop("allow_open", "false")).lower() == "true"
    unknown = sorted(set(args) - set(ModelSettings.model_fields))
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}: use model settings' names, e.g. model_name")
    settings = ModelSettings(**args)
    if settings.worker_token is None and not allow_open:
        raise ValueError(OPEN_REFUSED)
    return build(settings, **shape)
