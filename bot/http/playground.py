"""The playground: one page (``/app``) where a sentence's words are chips, a tap hides one, and the model's top words
appear as bars on one 0-100% scale; a second tab compares the /compare models side by side, a third runs the
guide's experiments. The same page is a Telegram Mini App on the bot's server and, without Telegram,
``mlm-bot playground`` on 127.0.0.1.

Its API (``POST /app/api/fill-mask``, ``POST /app/api/compare``) asks for ``Authorization: tma <initData>``, the
Mini App's signed launch data, checked against the bot's token with ``telegram-webapp-auth`` (Telegram's HMAC
scheme) and no older than a day; local mode (no token, loopback only) needs none. Bad input gets the same
one-line errors as the chat. The page loads scripts from its own origin only (and Telegram's
``telegram-web-app.js`` in a Mini App), under a strict Content-Security-Policy.

Everything of the playground is here: ``Playground`` (the routes), ``mini_app`` (on the bot's own server, for
``MINI_APP_URL``: the person's language, budget and log as in chat) and ``standalone_app`` (``mlm-bot
playground``). Its page is ``templates/web/``; the chat's button to it is ``bot.handlers.common.playground_button``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from telegram_webapp_auth.auth import TelegramAuthenticator, generate_secret_key
from telegram_webapp_auth.errors import ExpiredInitDataError, InvalidInitDataError

from bot.budgets import Refusal
from bot.compare_models import ComparedModels, row_error_words
from bot.config import BotSettings, PlaygroundSettings
from bot.services import BotServices
from bot.storage.vocabulary import Kind
from bot.storage.writes import InteractionEntry, UserInfo
from bot.text.render import LANGUAGES, Renderer
from models.engine.core import FillMaskEngine
from models.engine.errors import FillMaskError
from models.serving.client import FillMaskService, LocalFillMask

log = logging.getLogger(__name__)

TOP_K = 5
MAX_TEXT = 2_000  # characters of one sentence from the page
MAX_BODY = 16_384  # bytes of one request body
INIT_DATA_MAX_AGE = timedelta(days=1)
TELEGRAM_SCRIPT = "https://telegram.org/js/telegram-web-app.js"

# Only the page's own files (and Telegram's script in a Mini App); no inline script or style; framed only by
# Telegram's web clients (the mobile and desktop apps open it in their own web view).
CSP = (
    "default-src 'none'; script-src 'self'{telegram}; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self' https://web.telegram.org"
)
STATIC = {"playground.js": "text/javascript; charset=utf-8", "playground.css": "text/css; charset=utf-8"}

# Told of each use: (who, "fill-mask" | "compare", the sentence, the outcome: "ok" or an error code).
UseHook = Callable[["Person", str, str, str], Awaitable[None]]
# The person's per-minute budget (the chat's ``ModelCallLimit.enter``): a context that yields a refusal or None.
GateHook = Callable[[int], AbstractContextManager[Refusal | None]]
GATE_WAIT_S = 2.0  # a newer sentence waits this long for the person's previous request (the page cancelled it)
# The playground's work waiting for the model, in seconds of model time, past which a new request is refused
# with 429 and Retry-After (the page says "busy, trying again" and does): a viral post's Mini App users queue
# no deeper than this, and the chat, which the model serves first, never waits behind them.
MAX_BACKLOG_S = 1.0
# Before the model's queue: the event loop the chat shares. Past this share of its time busy (the playground's
# HTTP work crowding it: parsing, initData's check, JSON), new playground requests are refused the same way, at
# the cost of a header or two. Measured: 300 Mini App users at 200 requests/s kept the loop 100% busy and made
# the chat's answers 8 times as slow (benchmarks/viral_mini_app.py, docs/benchmarks.md).
MAX_LOOP_BUSY = 0.5
TRANSIENT = frozenset({"busy", "timeout", "not_ready", "shutting_down", "out_of_memory", "worker_unavailable"})
LOOP_PROBE_S = 0.1


class LoopLoad:
    """The share of time this event loop's thread spends running (its CPU time over wall time), measured by a
    task that wakes every ``LOOP_PROBE_S``, as a moving average. Started on the first request; ends with the loop
    (or ``stop``)."""

    def __init__(self) -> None:
        self.busy = 0.0
        self._task: asyncio.Task | None = None

    def watch(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="playground-loop-load")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wall, cpu = loop.time(), time.thread_time()
        while True:
            await asyncio.sleep(LOOP_PROBE_S)
            now_wall, now_cpu = loop.time(), time.thread_time()
            share = (now_cpu - cpu) / max(now_wall - wall, 1e-6)
            wall, cpu = now_wall, now_cpu
            self.busy += 0.5 * (min(share, 1.0) - self.busy)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


@dataclass
class Person:
    user_id: int | None  # None in local mode
    language: str  # the bot's language for them (their /language choice, else the default)
    username: str | None = None
    language_code: str | None = None
    # When their request came in: what it logs is stamped with it, so a /forget made while it ran drops it.
    began_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


class Unauthorized(Exception):
    pass


class Playground:
    """The page and its API. ``token`` set: a Mini App, every API call must carry valid initData. ``token`` None:
    local mode (``mlm-bot playground``, loopback only)."""

    def __init__(
        self,
        model: FillMaskService,
        renderer: Renderer,
        *,
        compared: ComparedModels | None = None,
        token: str | None = None,
        model_label: str = "",
        language_of: Callable[[int], Awaitable[str | None]] | None = None,
        gate: GateHook | None = None,
        on_use: UseHook | None = None,
        active: Callable[[], bool] | None = None,
    ) -> None:
        self.model = model
        self.renderer = renderer
        self.compared = compared
        self.model_label = model_label or model.model_name.rstrip("/").rsplit("/", 1)[-1]
        self._authenticator = TelegramAuthenticator(generate_secret_key(token)) if token else None
        self._language_of = language_of
        self._gate = gate
        self._on_use = on_use
        self._active = active  # None: always (local mode); else whether this process may answer now
        self.refused_busy = 0  # requests refused because the model's queue or the event loop was full
        self.loop_load = LoopLoad()

    @property
    def local(self) -> bool:
        return self._authenticator is None

    def routes(self) -> list[Route]:
        return [
            Route("/app", self.page, methods=["GET"]),
            Route("/app/static/{name}", self.static, methods=["GET"]),
            Route("/app/api/fill-mask", self.fill_mask, methods=["POST"]),
            Route("/app/api/compare", self.compare, methods=["POST"]),
        ]

    # ------------------------------------------------------------------- page
    def _headers(self) -> dict[str, str]:
        telegram = "" if self.local else " https://telegram.org"
        return {
            "Content-Security-Policy": CSP.format(telegram=telegram),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }

    def _foreign(self, request: Request) -> Response | None:
        """Local mode answers this machine's browser only: a Host (and an Origin, when there is one) that is not a
        loopback name is a request a web page elsewhere made the browser send (DNS rebinding reads the answers);
        403. The Mini App is checked by Telegram's signature instead."""
        if not self.local or (
            _loopback(request.headers.get("host")) and _loopback(request.headers.get("origin"), url=True)
        ):
            return None
        log.info("playground: refused a request for host %r", request.headers.get("host", "")[:100])
        return Response("this playground answers this machine only", status_code=403, media_type="text/plain")

    async def page(self, request: Request) -> Response:
        if (refused := self._foreign(request)) is not None:
            return refused
        asked = request.query_params.get("lang", "")
        language = asked if asked in LANGUAGES else self.renderer.default_language
        experiments = [{"label": label, "sentence": sentence} for label, sentence in self.renderer.experiments()]
        html = self.renderer.page(
            "playground",
            language=language,
            local=self.local,
            telegram_script=TELEGRAM_SCRIPT,
            model_name=self.model_label,
            experiments=json.dumps(experiments),
            compare=self.compared is not None,
        )
        return HTMLResponse(html, headers=self._headers())

    async def static(self, request: Request) -> Response:
        if (refused := self._foreign(request)) is not None:
            return refused
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        body = (resources.files("templates") / "web" / name).read_bytes()
        return Response(body, media_type=STATIC[name], headers=self._headers())

    # -------------------------------------------------------------------- API
    async def _person(self, request: Request) -> Person:
        began_at = datetime.now(timezone.utc)
        if self._authenticator is None:
            return Person(None, _language_header(request, self.renderer.default_language), began_at=began_at)
        scheme, _, init_data = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "tma" or not init_data:
            raise Unauthorized("no initData")
        try:
            data = self._authenticator.validate(init_data.strip(), expr_in=INIT_DATA_MAX_AGE)
        except (InvalidInitDataError, ExpiredInitDataError) as exc:
            raise Unauthorized(type(exc).__name__) from None
        if data.user is None:
            raise Unauthorized("no user in initData")
        chosen = await self._language_of(data.user.id) if self._language_of is not None else None
        return Person(
            data.user.id, chosen or self.renderer.default_language, data.user.username, data.user.language_code,
            began_at,
        )  # fmt: skip

    async def _sentence(self, request: Request) -> str:
        body = b""
        async for chunk in request.stream():  # read no further than the limit, whatever the body's size
            body += chunk
            if len(body) > MAX_BODY:
                raise ValueError("body too large")
        payload = json.loads(body or b"null")
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            raise ValueError
        return text[: MAX_TEXT + 1]

    def _error(self, code: str, language: str, status: int, details: dict[str, Any] | None = None) -> JSONResponse:
        line = self.renderer.error(code, details, plain=True, language=language)
        headers = self._headers()
        body: dict[str, Any] = {"error": line, "code": code}
        if status in (429, 503):  # when to try again, as a header (and in the body, for the page)
            wait = max(1, math.ceil(float((details or {}).get("retry_after") or 1)))
            headers["Retry-After"] = str(wait)
            body["retry_after"] = wait
        return JSONResponse(body, status_code=status, headers=headers)

    def _overloaded(self, language: str) -> Response | None:
        """429 with Retry-After when the playground's queue already holds more than MAX_BACKLOG_S of model time,
        or the event loop (which the chat needs too) is busy more than MAX_LOOP_BUSY of its time."""
        self.loop_load.watch()
        backlog = self.model.backlog_seconds()
        if backlog <= MAX_BACKLOG_S and self.loop_load.busy <= MAX_LOOP_BUSY:
            return None
        self.refused_busy += 1
        wait = max(math.ceil(backlog), 2 if self.loop_load.busy > MAX_LOOP_BUSY else 1)
        return self._error("playground_busy", language, 429, {"retry_after": min(wait, 10)})

    async def _handle(
        self, request: Request, kind: str, answer: Callable[[str], Awaitable[dict[str, Any]]]
    ) -> Response:
        if (refused := self._foreign(request)) is not None:
            return refused
        if _media_type(request) != "application/json":  # what a form on another site cannot send without CORS
            return self._error("bad_request", _language_header(request, self.renderer.default_language), 415)
        if self._active is not None and not self._active():  # a standby, or stopping: the active process answers
            return self._error("standby", _language_header(request, self.renderer.default_language), 503)
        # Busy: refused before anything costly (initData's check, a database read for the language).
        if (busy := self._overloaded(_language_header(request, self.renderer.default_language))) is not None:
            return busy
        try:
            person = await self._person(request)
        except Unauthorized as exc:
            log.info("playground: refused a request (%s)", exc)
            return self._error("not_from_telegram", self.renderer.default_language, 401)
        try:
            text = await self._sentence(request)
        except (ValueError, UnicodeDecodeError, RecursionError):  # not JSON, too big, or nested past reason
            return self._error("bad_request", person.language, 400)
        if len(text) > MAX_TEXT:
            return self._error("input_too_long", person.language, 400, {"limit": MAX_TEXT})
        if self._gate is None or person.user_id is None:
            return await self._answer(person, kind, text, answer)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATE_WAIT_S
        while True:
            with self._gate(person.user_id) as refusal:
                if refusal is None:
                    return await self._answer(person, kind, text, answer)
            # The page cancels a stale request, but the server may still be running it: a moment's wait.
            if refusal.code != "in_flight" or loop.time() > deadline:
                await self._used(person, kind, text, refusal.code)
                return self._error(refusal.code, person.language, 429, {"retry_after": refusal.retry_after})
            await asyncio.sleep(0.05)

    async def _answer(
        self, person: Person, kind: str, text: str, answer: Callable[[str], Awaitable[dict[str, Any]]]
    ) -> Response:
        try:
            body = await answer(text)
        except FillMaskError as exc:
            await self._used(person, kind, text, exc.code)
            # The model's own trouble (busy, too slow, not loaded yet) is not the sentence's: 503, try again.
            status = 503 if exc.code in TRANSIENT else 400
            return self._error(exc.code, person.language, status, exc.details)
        await self._used(person, kind, text, "ok")
        return JSONResponse(body, headers=self._headers())

    async def _used(self, person: Person, kind: str, text: str, outcome: str) -> None:
        if self._on_use is not None and person.user_id is not None:
            await self._on_use(person, kind, text, outcome)

    async def fill_mask(self, request: Request) -> Response:
        async def answer(text: str) -> dict[str, Any]:
            result = await self.model.fill_mask(text, top_k=TOP_K, words_only=True, background=True)
            masks = [[{"word": p.token_str.strip() or p.token_str, "score": p.score} for p in m] for m in result.masks]
            return {"model": self.model_label, "masks": masks, "truncated": result.truncated}

        return await self._handle(request, "fill-mask", answer)

    async def compare(self, request: Request) -> Response:
        compared = self.compared

        async def answer(text: str) -> dict[str, Any]:
            if compared is None:
                raise FillMaskError("compare is not set up here")
            rows = await compared.compare(text)
            return {
                "models": [
                    {
                        "label": row.label,
                        "masks": row.masks,
                        "error": row_error_words(self.renderer, row),
                    }
                    for row in rows
                ]
            }

        return await self._handle(request, "compare", answer)


def _language_header(request: Request, default: str) -> str:
    asked = request.headers.get("x-language", "")
    return asked if asked in LANGUAGES else default


def _loopback(value: str | None, *, url: bool = False) -> bool:
    """A Host header (``127.0.0.1:8080``, ``localhost``, ``[::1]:8080``) or an Origin (``http://localhost:8080``)
    naming this machine; an absent Origin passes (same-origin GETs and non-browser clients send none)."""
    if value is None:
        return url
    try:
        name = urlsplit(value if url else f"//{value}").hostname
    except ValueError:
        return False
    if name is None:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def mini_app(settings: BotSettings, services: BotServices, *, active: Callable[[], bool]) -> Playground:
    """The playground as a Mini App on the bot's server: initData checked against the token, the person's language
    and per-minute budget as in chat, each use logged as a ``playground`` interaction (so /forget removes it)."""

    async def used(person: Person, kind: str, text: str, outcome: str) -> None:
        await services.log(
            InteractionEntry(
                kind=Kind.PLAYGROUND, user=UserInfo(person.user_id, person.username, person.language_code),
                chat_id=person.user_id, chat_type="private", trigger=kind, input_text=text, outcome=outcome,
                model_name=services.model.model_name, created_at=person.began_at,
            )
        )  # fmt: skip

    return Playground(
        services.model,
        services.renderer,
        compared=services.compared_models(),
        token=settings.token(),
        model_label=services.model_label,
        language_of=services.languages.of if services.languages is not None else None,
        gate=services.predict_limit.enter,
        on_use=used,
        active=active,
    )


def standalone_app(settings: PlaygroundSettings, renderer: Renderer, engine: FillMaskEngine, *, token: str | None):
    """``mlm-bot playground``: the page and its API on their own server, the (loaded) model in this process; with a
    token, only a Mini App's signed requests are answered."""
    model = LocalFillMask(settings, engine=engine)
    compared = ComparedModels(settings.compare_models, settings, memory_mb=settings.compare_memory_mb, main=model)
    playground = Playground(model, renderer, compared=compared, token=token)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await model.start()  # the engine is loaded already: this starts its batcher on this loop
        yield
        playground.loop_load.stop()
        await compared.close()
        await model.close()

    async def home(request):
        return RedirectResponse("/app")

    return Starlette(routes=[Route("/", home), *playground.routes()], lifespan=lifespan)
