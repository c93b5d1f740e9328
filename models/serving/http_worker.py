"""The model worker as an HTTP service (Starlette on uvicorn).

``POST /v1/fill-mask`` speaks Hugging Face's inference schema, so ``huggingface_hub.InferenceClient`` works
against it; ``POST /v1/fill-mask/joint`` returns the jointly filled sentence; ``GET /v1/info`` describes the
model; ``/healthz``, ``/readyz`` and ``/metrics`` are for the orchestrator and Prometheus.

Every answer is JSON; every mistake a client can make is a 4xx with ``{"error": message, "error_type": code}``
(HF's error shape), never a 500.

With ``WORKER_TOKEN`` set, ``/v1/*`` and ``/metrics`` answer only ``Authorization: Bearer <token>`` (compared
in constant time; 401 otherwise); ``/healthz`` and ``/readyz`` stay open for orchestrators and say no more than
ready or not (why not, and which model, only to a caller with the token). One caller (one client address) may
have at most ``WORKER_CALLER_MAX_IN_FLIGHT`` sentences in the queue at once (429 past it), so a script with the
token cannot fill the queue that the bot's users wait in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response
from starlette.routing import Route

from models.engine.core import MAX_TOP_K, FillMaskEngine
from models.engine.errors import (
    CallerBusyError,
    FillMaskError,
    InputTooLongError,
    InvalidParameterError,
    ModelLoadFailedError,
    ModelNotReadyError,
    UnauthorizedError,
)
from models.engine.loading import ModelLoadError
from models.engine.results import FillMaskRequest
from models.serving.batcher import MicroBatcher
from models.serving.client import batcher_from, engine_from
from models.serving.worker_metrics import WorkerMetrics
from models.settings import ModelSettings

log = logging.getLogger(__name__)


class JSONResponse(_StarletteJSONResponse):
    """Starlette's JSON response encoded with orjson: about 18x faster than ``json.dumps`` on five
    predictions (0.45 vs 8.5 µs here), which counts when the GPU is fast and the CPU encodes every answer."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


EngineFactory = Callable[[ModelSettings], FillMaskEngine]


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    top_k: int | None = None
    targets: list[str] | None = None
    words_only: bool = False

    @field_validator("targets", mode="before")
    @classmethod
    def _one_target(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value  # HF accepts a single string too


class FillMaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    inputs: str | list[str]
    parameters: Parameters | None = None


class WorkerState:
    """What the routes share: the batcher once the model is ready, the metrics, the load error if any."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics()
        self.engine: FillMaskEngine | None = None
        self.batcher: MicroBatcher | None = None
        self.load_error: str | None = None
        self.in_flight_by_caller: dict[str, int] = {}  # sentences queued per caller; an entry leaves at zero

    def authorized(self, request: Request) -> bool:
        token = self.settings.worker_token_value()
        if token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

    @contextlib.contextmanager
    def caller_share(self, caller: str, sentences: int):
        """Count ``sentences`` against ``caller``'s share of the queue while they are answered."""
        held = self.in_flight_by_caller.get(caller, 0)
        limit = self.settings.worker_caller_max_in_flight
        if held + sentences > limit:
            raise CallerBusyError(
                f"This caller already has {held} sentences in the queue (at most {limit} at once): wait for them."
            )
        self.in_flight_by_caller[caller] = held + sentences
        try:
            yield
        finally:
            left = self.in_flight_by_caller.get(caller, 0) - sentences
            if left > 0:
                self.in_flight_by_caller[caller] = left
            else:
                self.in_flight_by_caller.pop(caller, None)

    async def load(self, factory: EngineFactory, on_failure: Callable[[], None] | None = None) -> None:
        try:
            engine = await asyncio.to_thread(factory, self.settings)  # includes the warm-up forward
        except Exception as exc:
            # /healthz turns 503 and requests get "the model failed to load"; then the worker exits non-zero
            # (on_failure), so that a supervisor or compose's restart policy brings it back.
            if isinstance(exc, ModelLoadError):
                log.error("could not load the model: %s", exc)
                self.load_error = str(exc)
            else:
                log.exception("could not load model %s", self.settings.model_name)
                self.load_error = f"{type(exc).__name__}: {exc}"
            if on_failure is not None:
                on_failure()
            return
        s = self.settings
        batcher = batcher_from(engine, s, request_timeout=s.request_timeout_s, observer=self.metrics)
        await batcher.start()
        self.engine, self.batcher = engine, batcher
        self.metrics.queue_depth.set_function(lambda: batcher.queue_depth)
        self.metrics.in_flight.set_function(lambda: batcher.in_flight)
        self.metrics.ready.set(1)

    def ready_batcher(self) -> MicroBatcher:
        if self.batcher is None:
            raise self.not_ready()
        return self.batcher

    def not_ready(self) -> FillMaskError:
        if self.load_error:
            return ModelLoadFailedError(f"The model failed to load: {self.load_error}")
        return ModelNotReadyError("The model is still loading. Try again in a moment.")


def create_app(
    settings: ModelSettings | None = None,
    *,
    engine_factory: EngineFactory = engine_from,
    on_load_failure: Callable[[], None] | None = None,
) -> Starlette:
    """The worker's ASGI app. ``on_load_failure`` is called once if the model cannot be loaded (``mlm-bot
    worker`` stops the server there and exits 1)."""
    state = WorkerState(settings or ModelSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.load(engine_factory, on_load_failure))
        yield
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        if state.batcher is not None:
            await state.batcher.close()

    async def fill_mask(request: Request) -> Response:
        return await _answer(state, "fill-mask", request, _fill_mask)

    async def fill_joint(request: Request) -> Response:
        return await _answer(state, "joint", request, _fill_joint)

    async def info(request: Request) -> Response:
        if not state.authorized(request):
            return _unauthorized()
        engine = state.engine
        if engine is None:
            return _error(state.not_ready())
        return JSONResponse(
            {
                "model": engine.name,
                "mask_token": engine.mask_token,
                "device": str(engine.device),
                "dtype": str(engine.dtype).removeprefix("torch."),
                "precision": engine.precision,
                "max_masks": engine.max_masks,
                "max_top_k": MAX_TOP_K,
                "max_length": engine.max_length,
            }
        )

    # Open to orchestrators, which need no more than the status; what failed and which model (a load error names
    # local paths and hub ids) only for a caller with the token. Without WORKER_TOKEN: the status only, and the
    # worker's log says the rest.
    def detailed(request: Request, **details: Any) -> dict[str, Any]:
        told = state.settings.worker_token is not None and state.authorized(request)
        return {k: v for k, v in details.items() if v is not None} if told else {}

    async def healthz(request: Request) -> Response:
        if state.load_error:
            body = {"status": "failed", **detailed(request, error=state.load_error)}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if state.batcher is None:
            status = "failed" if state.load_error else "loading"
            return JSONResponse({"status": status, **detailed(request, error=state.load_error)}, status_code=503)
        return JSONResponse({"status": "ready", **detailed(request, model=state.settings.model_name)})

    async def metrics(request: Request) -> Response:
        if not state.authorized(request):
            return _unauthorized()
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail, "error_type": "http"}, status_code=exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return JSONResponse({"error": "Internal error in the model worker.", "error_type": "internal"}, status_code=500)

    app = Starlette(
        routes=[
            Route("/v1/fill-mask", fill_mask, methods=["POST"]),
            Route("/v1/fill-mask/joint", fill_joint, methods=["POST"]),
            Route("/v1/info", info, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.worker = state
    return app


async def _answer(state: WorkerState, endpoint: str, request: Request, handler: Callable) -> Response:
    started = time.perf_counter()
    if not state.authorized(request):
        state.metrics.requests.labels(endpoint, "unauthorized").inc()
        return _unauthorized()
    try:
        body = await _read_body(request, state.settings)
        sentences = len(body.inputs) if isinstance(body.inputs, list) else 1
        with state.caller_share(request.client.host if request.client else "unknown", sentences):
            response = await handler(state, body)
        outcome = "ok"
    except FillMaskError as exc:
        response, outcome = _error(exc), exc.code
    state.metrics.requests.labels(endpoint, outcome).inc()
    state.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)
    return response


async def _read_body(request: Request, settings: ModelSettings) -> FillMaskBody:
    limit = settings.worker_max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InputTooLongError(f"The request body is larger than {limit} bytes.")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > limit:
            raise InputTooLongError(f"The request body is larger than {limit} bytes.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidParameterError(
            'The body is not valid JSON. Send {"inputs": "The cat sat on the [MASK].", "parameters": {"top_k": 5}}.'
        ) from None
    try:
        body = FillMaskBody.model_validate(data)
    except ValidationError as exc:
        raise InvalidParameterError(_describe(exc)) from None
    if isinstance(body.inputs, list):
        if not body.inputs:
            raise InvalidParameterError("inputs is an empty list: send at least one sentence.")
        if len(body.inputs) > settings.worker_max_inputs:
            raise InputTooLongError(
                f"At most {settings.worker_max_inputs} sentences per request; got {len(body.inputs)}."
            )
    return body


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("str", "list["))) or "body"
    if first["type"] == "extra_forbidden":
        return f"Unknown field {where!r}. Allowed: inputs, parameters.top_k, parameters.targets, parameters.words_only."
    if first["type"] == "missing":
        return f'Missing field {where!r}: send {{"inputs": "a sentence with [MASK]"}}.'
    return f"Invalid {where}: {first['msg']}."


def _requests(body: FillMaskBody, engine: FillMaskEngine, top_k: int | None) -> list[FillMaskRequest]:
    params = body.parameters or Parameters()
    texts = body.inputs if isinstance(body.inputs, list) else [body.inputs]
    targets = tuple(params.targets) if params.targets is not None else None
    out = []
    for i, text in enumerate(texts):
        try:
            engine.normalize(text)  # cheap checks first, so a bad sentence is named before any model work
        except FillMaskError as exc:
            if isinstance(body.inputs, list):  # say which sentence of the list
                raise type(exc)(f"inputs[{i}]: {exc.message}", **exc.details) from None
            raise
        out.append(FillMaskRequest(text, top_k if top_k is not None else 5, targets, params.words_only))
    return out


async def _fill_mask(state: WorkerState, body: FillMaskBody) -> Response:
    batcher = state.ready_batcher()
    params = body.parameters or Parameters()
    requests = _requests(body, batcher.engine, params.top_k)
    results = await batcher.fill_many(requests) if len(requests) > 1 else [await batcher.fill(requests[0])]
    payload: Any = [r.to_hf() for r in results]
    if not isinstance(body.inputs, list):
        payload = payload[0]
    truncated = ",".join(str(i) for i, r in enumerate(results) if r.truncated)
    headers = {"X-Truncated": truncated} if truncated else None
    return JSONResponse(payload, headers=headers)


async def _fill_joint(state: WorkerState, body: FillMaskBody) -> Response:
    batcher = state.ready_batcher()
    if not isinstance(body.inputs, str):
        raise InvalidParameterError("The joint fill takes one sentence: inputs must be a string.")
    if body.parameters is not None and body.parameters.top_k is not None:
        raise InvalidParameterError("The joint fill picks one word per mask: top_k does not apply.")
    (request,) = _requests(body, batcher.engine, 1)
    return JSONResponse((await batcher.fill_joint(request)).to_dict())


def _unauthorized() -> JSONResponse:
    error = UnauthorizedError("This worker needs Authorization: Bearer <WORKER_TOKEN>.")
    response = _error(error)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_open(host: str, settings: ModelSettings, what: str = "the model worker") -> None:
    """Say it at start-up when anyone who can reach the port can use the model."""
    if settings.worker_token is None and not is_loopback(host):
        log.warning(
            "%s listens on %s without WORKER_TOKEN: anyone who can reach this port can use the model (on a "
            "private compose network, the other containers). Set WORKER_TOKEN (the same value for the bot) or "
            "listen on 127.0.0.1",
            what,
            host,
        )


def _error(exc: FillMaskError) -> JSONResponse:
    """HF's error shape, plus the details a client needs to say it well (e.g. the mask count and the limit)."""
    body: dict[str, Any] = {"error": exc.message, "error_type": exc.code}
    details = {k: v for k, v in exc.details.items() if isinstance(v, (str, int, float, bool, list))}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=exc.http_status)
