"""One interface to the model for the bot, wherever the model runs.

* ``LocalFillMask``: the engine and the micro-batcher inside this process (the default);
* ``RemoteFillMask``: a worker started with ``mlm-bot worker`` (``MODEL_WORKER_URL``), over HTTP, with
  timeouts and retries; the worker's typed errors come back as the same exception classes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from models.batcher import MicroBatcher
from models.engine import FillMaskEngine
from models.errors import (
    ERRORS_BY_CODE,
    BusyError,
    FillMaskError,
    ModelNotReadyError,
    RequestTimeoutError,
    WorkerUnavailableError,
)
from models.results import FillMaskRequest, FillMaskResult, JointFill
from models.settings import ModelSettings

log = logging.getLogger(__name__)


class FillMaskService(Protocol):
    model_name: str
    mask_token: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def fill_mask(
        self, text: str, *, top_k: int = 5, targets: Sequence[str] | None = None, words_only: bool = False
    ) -> FillMaskResult: ...

    async def fill_joint(
        self, text: str, *, targets: Sequence[str] | None = None, words_only: bool = False
    ) -> JointFill: ...


def _request(text: str, top_k: int, targets: Sequence[str] | None, words_only: bool) -> FillMaskRequest:
    return FillMaskRequest(text, top_k, tuple(targets) if targets is not None else None, words_only)


class LocalFillMask:
    """The model in this process; loading runs in a thread so the event loop stays free."""

    def __init__(self, settings: ModelSettings, *, engine: FillMaskEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.batcher: MicroBatcher | None = None
        self.model_name = settings.model_name
        self.mask_token = engine.mask_token if engine is not None else "[MASK]"

    async def start(self) -> None:
        s = self.settings
        if self.engine is None:
            self.engine = await asyncio.to_thread(
                FillMaskEngine.load,
                s.model_name,
                device=s.model_device,
                dtype=s.model_dtype,
                max_masks=s.model_max_masks,
                cuda_graphs=s.model_cuda_graphs,
                max_batch_size=s.batch_max_size,
                max_batch_tokens=s.batch_max_tokens,
            )
        self.mask_token = self.engine.mask_token
        self.batcher = MicroBatcher(
            self.engine,
            max_batch_size=s.batch_max_size,
            max_batch_tokens=s.batch_max_tokens,
            max_queue=s.queue_max,
            request_timeout=s.request_timeout_s,
        )
        await self.batcher.start()

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
            self.batcher = None

    def _batcher(self) -> MicroBatcher:
        if self.batcher is None:
            raise ModelNotReadyError("The model is still loading. Try again in a moment.")
        return self.batcher

    async def fill_mask(
        self, text: str, *, top_k: int = 5, targets: Sequence[str] | None = None, words_only: bool = False
    ) -> FillMaskResult:
        return await self._batcher().fill(_request(text, top_k, targets, words_only))

    async def fill_joint(
        self, text: str, *, targets: Sequence[str] | None = None, words_only: bool = False
    ) -> JointFill:
        return await self._batcher().fill_joint(_request(text, 1, targets, words_only))


class RemoteFillMask:
    """A client of ``mlm-bot worker``. Transport errors and 502/503/504 answers are retried with exponential
    backoff (the requests are pure functions, so a retry is always safe); other 4xx answers are the caller's
    mistake and raise the worker's typed error at once."""

    RETRY_STATUSES = frozenset({502, 503, 504})

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.25,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1/fill-mask")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.model_name = "remote"
        self.mask_token = "[MASK]"
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, transport=self._transport)
        try:
            info = await self._call("GET", "/v1/info")
        except FillMaskError as exc:
            # The bot may start before the worker: it keeps the defaults and the first request tells.
            log.warning("model worker at %s not ready yet: %s", self.base_url, exc.message)
            return
        self.model_name = info["model"]
        self.mask_token = info["mask_token"]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fill_mask(
        self, text: str, *, top_k: int = 5, targets: Sequence[str] | None = None, words_only: bool = False
    ) -> FillMaskResult:
        body = {"inputs": text, "parameters": _parameters(top_k, targets, words_only)}
        data, headers = await self._call("POST", "/v1/fill-mask", body, with_headers=True)
        return FillMaskResult.from_hf(data, truncated=headers.get("x-truncated") == "0")

    async def fill_joint(
        self, text: str, *, targets: Sequence[str] | None = None, words_only: bool = False
    ) -> JointFill:
        body = {"inputs": text, "parameters": _parameters(None, targets, words_only)}
        return JointFill.from_dict(await self._call("POST", "/v1/fill-mask/joint", body))

    async def _call(self, method: str, path: str, body: Any = None, *, with_headers: bool = False) -> Any:
        if self._client is None:
            raise ModelNotReadyError("The model client is not started.")
        error: FillMaskError = WorkerUnavailableError("The model worker cannot be reached right now.")
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = await self._client.request(method, path, json=body)
            except httpx.TimeoutException:
                error = RequestTimeoutError("The model worker did not answer in time. Try again in a moment.")
                continue
            except httpx.TransportError as exc:
                log.warning("model worker %s: %s", self.base_url, type(exc).__name__)
                error = WorkerUnavailableError("The model worker cannot be reached right now.")
                continue
            if response.status_code < 400:
                data = response.json()
                return (data, response.headers) if with_headers else data
            error = _error_from(response)
            if response.status_code not in self.RETRY_STATUSES:
                raise error
        raise error


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
    try:
        data = response.json()
        message, code = str(data["error"]), str(data.get("error_type", ""))
    except (ValueError, KeyError, TypeError):
        message, code = f"The model worker answered HTTP {response.status_code}.", ""
    if code in ERRORS_BY_CODE:
        return ERRORS_BY_CODE[code](message)
    if response.status_code == 503:
        return BusyError(message)
    return WorkerUnavailableError(message)


def create_fill_mask_service(settings: ModelSettings) -> FillMaskService:
    """The remote worker when ``MODEL_WORKER_URL`` is set, else the model in this process."""
    if settings.model_worker_url:
        return RemoteFillMask(settings.model_worker_url, timeout=settings.request_timeout_s)
    return LocalFillMask(settings)
