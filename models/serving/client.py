"""One interface to the model for the bot, wherever the model runs.

* ``LocalFillMask``: the engine and the micro-batcher inside this process (the default);
* ``RemoteFillMask``: a worker started with ``mlm-bot worker`` (``MODEL_WORKER_URL``), over HTTP, with
  timeouts and retries; the worker's typed errors come back as the same exception classes;
* ``engine_from`` and ``batcher_from``: settings to a loaded engine and its batcher, for every process that holds
  the model (this one, the worker, a Ray replica, the playground).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_before_delay, wait_exponential

from models.engine.accel.heap import freeze_loaded_objects
from models.engine.core import FillMaskEngine
from models.engine.errors import (
    ERRORS_BY_CODE,
    BusyError,
    FillMaskError,
    ModelLoadFailedError,
    ModelNotReadyError,
    RequestTimeoutError,
    UnauthorizedError,
    WorkerUnavailableError,
)
from models.engine.results import FillMaskRequest, FillMaskResult, JointFill
from models.serving.batcher import MicroBatcher
from models.settings import ModelSettings

log = logging.getLogger(__name__)


class FillMaskService(Protocol):
    model_name: str
    mask_token: str
    precision: str  # what the model computes in: float32 (the pipeline's numbers), bfloat16, int8 ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ready(self) -> str | None:
        """None when predictions can be served now, else why not (for a health check)."""
        ...

    async def fill_mask(
        self,
        text: str,
        *,
        top_k: int = 5,
        targets: Sequence[str] | None = None,
        words_only: bool = False,
        background: bool = False,
    ) -> FillMaskResult:
        """``background``: the playground's requests, which the model takes only when no chat request waits."""
        ...

    def backlog_seconds(self) -> float:
        """About how long the model needs for the background work already waiting (0 when not known)."""
        ...

    async def fill_joint(
        self, text: str, *, targets: Sequence[str] | None = None, words_only: bool = False
    ) -> JointFill: ...


def _request(
    text: str, top_k: int, targets: Sequence[str] | None, words_only: bool, background: bool = False
) -> FillMaskRequest:
    return FillMaskRequest(text, top_k, tuple(targets) if targets is not None else None, words_only, background)


def engine_from(settings: ModelSettings) -> FillMaskEngine:
    """The model the settings name, loaded, warmed up, and kept out of the garbage collector's way: the one way
    every process (the bot with the model in it, the worker, a Ray replica, the playground) turns settings into
    an engine. Blocking (seconds): call it from a thread in async code."""
    engine = FillMaskEngine.load(
        settings.model_name,
        device=settings.model_device,
        dtype=settings.model_dtype,
        max_masks=settings.model_max_masks,
        cuda_graphs=settings.model_cuda_graphs,
        packed_weights=settings.model_packed_weights,
        max_batch_size=settings.batch_max_size,
        max_batch_tokens=settings.batch_max_tokens,
        runtime=settings.model_runtime,
        onnx_cache=settings.model_onnx_cache,
    )
    freeze_loaded_objects()
    return engine


def batcher_from(
    engine: FillMaskEngine, settings: ModelSettings, *, request_timeout: float, observer: Any = None
) -> MicroBatcher:
    """The micro-batcher in front of ``engine``, sized by the settings (not started)."""
    return MicroBatcher(
        engine,
        max_batch_size=settings.batch_max_size,
        max_batch_tokens=settings.batch_max_tokens,
        max_queue=settings.queue_max,
        request_timeout=request_timeout,
        observer=observer,
    )


class LocalFillMask:
    """The model in this process; loading runs in a thread so the event loop stays free."""

    def __init__(self, settings: ModelSettings, *, engine: FillMaskEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.batcher: MicroBatcher | None = None
        self.model_name = settings.model_name
        self.mask_token = engine.mask_token if engine is not None else "[MASK]"
        self.precision = engine.precision if engine is not None else "float32"

    async def start(self) -> None:
        s = self.settings
        if self.engine is None:
            self.engine = await asyncio.to_thread(engine_from, s)
        self.mask_token = self.engine.mask_token
        self.precision = self.engine.precision
        # In this process the batcher's deadline is the chat request's: the user waits no longer than that.
        self.batcher = batcher_from(self.engine, s, request_timeout=min(s.request_timeout_s, s.model_deadline_s))
        await self.batcher.start()

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
            self.batcher = None

    async def ready(self) -> str | None:
        return None if self.batcher is not None else "the model is loading"

    def _batcher(self) -> MicroBatcher:
        if self.batcher is None:
            raise ModelNotReadyError("The model is still loading. Try again in a moment.")
        return self.batcher

    async def fill_mask(
        self,
        text: str,
        *,
        top_k: int = 5,
        targets: Sequence[str] | None = None,
        words_only: bool = False,
        background: bool = False,
    ) -> FillMaskResult:
        return await self._batcher().fill(_request(text, top_k, targets, words_only, background))

    def backlog_seconds(self) -> float:
        return self.batcher.backlog_seconds() if self.batcher is not None else 0.0

    async def fill_joint(
        self, text: str, *, targets: Sequence[str] | None = None, words_only: bool = False
    ) -> JointFill:
        return await self._batcher().fill_joint(_request(text, 1, targets, words_only))


class RemoteFillMask:
    """A client of ``mlm-bot worker``.

    One deadline per call (``deadline``, 10 s by default), retries included, so a chat user never waits longer.
    Transport errors and 502/503 answers are retried with exponential backoff while the deadline allows (the
    requests are pure functions, so a retry is always safe); a 504 means the worker's own deadline passed, and
    other 4xx answers are the caller's mistake: both raise the worker's typed error at once, with its details.

    The worker may come up after the bot: until it has answered ``/v1/info``, the model's name is the bot's
    ``MODEL_NAME`` and the mask ``[MASK]``, and a background task keeps asking (with backoff) until it knows."""

    RETRY_STATUSES = frozenset({502, 503})
    INFO_RETRY_MAX_S = 30.0

    def __init__(
        self,
        base_url: str,
        *,
        deadline: float = 10.0,
        retries: int = 2,
        backoff: float = 0.25,
        model_name: str = "the model worker",
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1/fill-mask")
        self.shown_url = without_credentials(self.base_url)  # what log lines say: no password, no query
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.deadline = deadline
        self.retries = retries
        self.backoff = backoff
        self.model_name = model_name
        self.mask_token = "[MASK]"
        self.precision = "float32"
        self.info_known = False
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._info_task: asyncio.Task | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(base_url=self.base_url, transport=self._transport, headers=self._headers)
        log.info("using the model worker at %s", self.shown_url)
        if not await self._fetch_info():
            log.warning("model worker at %s not ready yet: asking again in the background", self.shown_url)
            self._info_task = asyncio.create_task(self._keep_asking_for_info(), name="mlm-worker-info")

    async def _fetch_info(self) -> bool:
        try:
            info = await self._call("GET", "/v1/info")
        except FillMaskError:
            return False
        self.model_name, self.mask_token, self.info_known = info["model"], info["mask_token"], True
        self.precision = str(info.get("precision") or "float32")
        log.info("model worker at %s serves %s (mask %s)", self.shown_url, self.model_name, self.mask_token)
        return True

    async def _keep_asking_for_info(self) -> None:
        delay = 1.0
        while not await self._fetch_info():
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.INFO_RETRY_MAX_S)

    async def close(self) -> None:
        if self._info_task is not None:
            self._info_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._info_task
            self._info_task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fill_mask(
        self,
        text: str,
        *,
        top_k: int = 5,
        targets: Sequence[str] | None = None,
        words_only: bool = False,
        background: bool = False,
    ) -> FillMaskResult:
        # (``background`` is not sent: the worker has one queue for every caller, and its own limits per caller)
        body = {"inputs": text, "parameters": _parameters(top_k, targets, words_only)}
        data, headers = await self._call("POST", "/v1/fill-mask", body, with_headers=True)
        return FillMaskResult.from_hf(data, truncated=headers.get("x-truncated") == "0")

    async def fill_joint(
        self, text: str, *, targets: Sequence[str] | None = None, words_only: bool = False
    ) -> JointFill:
        body = {"inputs": text, "parameters": _parameters(None, targets, words_only)}
        return JointFill.from_dict(await self._call("POST", "/v1/fill-mask/joint", body))

    def backlog_seconds(self) -> float:
        return 0.0  # the worker's queue is its own: it answers "busy" itself when full

    async def ready(self, timeout: float = 3.0) -> str | None:
        """The worker's own ``/readyz``, asked once."""
        if self._client is None:
            return "the model client is not started"
        try:
            response = await self._client.get("/readyz", timeout=timeout)
        except httpx.HTTPError as exc:  # (health checks are read by strangers too: no address in them)
            return f"the model worker cannot be reached ({type(exc).__name__})"
        if response.status_code != 200:
            return f"the model worker is not ready (HTTP {response.status_code})"
        return None

    async def _call(self, method: str, path: str, body: Any = None, *, with_headers: bool = False) -> Any:
        if self._client is None:
            raise ModelNotReadyError("The model client is not started.")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline
        retrying = AsyncRetrying(
            # No attempt that would start after the deadline: tenacity stops before a wait that would end past it.
            stop=stop_after_attempt(self.retries + 1) | stop_before_delay(self.deadline),
            wait=wait_exponential(multiplier=self.backoff, max=self.deadline),
            retry=retry_if_exception_type(_Retry),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(method, path, body, deadline - loop.time(), with_headers)
        except _Retry as exc:
            raise exc.error from None
        raise AssertionError("unreachable")  # pragma: no cover - AsyncRetrying either returns or raises

    async def _attempt(self, method: str, path: str, body: Any, remaining: float, with_headers: bool) -> Any:
        assert self._client is not None
        if remaining <= 0:
            raise RequestTimeoutError("The model worker did not answer in time. Try again in a moment.")
        try:
            response = await self._client.request(method, path, json=body, timeout=remaining)
        except httpx.TimeoutException:
            raise RequestTimeoutError("The model worker did not answer in time. Try again in a moment.") from None
        except httpx.TransportError as exc:
            log.warning("model worker %s: %s", self.shown_url, type(exc).__name__)
            raise _Retry(WorkerUnavailableError("The model worker cannot be reached right now.")) from None
        if response.status_code < 400:
            data = response.json()
            return (data, response.headers) if with_headers else data
        error = _error_from(response)
        if isinstance(error, UnauthorizedError):
            log.error("the model worker at %s refused this bot: set WORKER_TOKEN to the worker's", self.shown_url)
        if response.status_code in self.RETRY_STATUSES and not isinstance(error, ModelLoadFailedError):
            raise _Retry(error)
        raise error


class _Retry(Exception):
    """A failed attempt worth another try; carries the error to raise if none is left."""

    def __init__(self, error: FillMaskError) -> None:
        super().__init__(error.message)
        self.error = error


def _parameters(top_k: int | None, targets: Sequence[str] | None, words_only: bool) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if top_k is not None:
        params["top_k"] = top_k
    if targets is not None:
        params["targets"] = list(targets)
    if words_only:
        params["words_only"] = True
    return params


def _error_from(response: httpx.Response) -> FillMaskError:
    """The worker's typed error, with its details (a mask count and limit, say), as if raised in process."""
    details: dict[str, Any] = {}
    try:
        data = response.json()
        message, code = str(data["error"]), str(data.get("error_type", ""))
        if isinstance(data.get("details"), dict):
            details = {str(k): v for k, v in data["details"].items()}
    except (ValueError, KeyError, TypeError):
        message, code = f"The model worker answered HTTP {response.status_code}.", ""
    if code in ERRORS_BY_CODE:
        return ERRORS_BY_CODE[code](message, **details)
    if response.status_code == 503:
        return BusyError(message)
    return WorkerUnavailableError(message)


def without_credentials(url: str) -> str:
    """``http://user:secret@worker:8000/x?key=y`` -> ``http://worker:8000/x``: an address fit for a log line."""
    try:
        parsed = httpx.URL(url)
        return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<the worker's address>"


def create_fill_mask_service(settings: ModelSettings) -> FillMaskService:
    """The remote worker when ``MODEL_WORKER_URL`` is set, else the model in this process."""
    if settings.model_worker_url:
        return RemoteFillMask(
            settings.model_worker_url,
            deadline=settings.model_deadline_s,
            model_name=settings.model_name,
            token=settings.worker_token_value(),
        )
    return LocalFillMask(settings)
