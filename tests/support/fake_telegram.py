"""A fake Telegram Bot API server on 127.0.0.1, for running the real bot end to end.

It speaks the Bot API's HTTP shape (``/bot<token>/<method>``, form or multipart parameters, JSON answers), hands out
updates through ``getUpdates`` long polling, keeps every call the bot makes, and refuses what the real Telegram
refuses: malformed HTML, text over 4096 characters (or captions over 1024) after entity parsing, callback data over
64 bytes, more than 50 inline results, DMs to users who never started the bot. It answers 429 to a chat over its
flood allowance (``flood``), 429 or 502 on demand, and drops or holds calls when a test turns ``network`` chaos on
(both in ``telegram_limits``). Once ``setWebhook`` is called it refuses ``getUpdates`` (409) and POSTs each update to
the webhook with the ``X-Telegram-Bot-Api-Secret-Token`` header, again until the webhook answers 2xx, and reports the
last failure in ``getWebhookInfo``. Its HTML checker is written independently of the bot's own (``html.parser``
here), so a formatting bug in the bot fails the tests instead of agreeing with itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support import telegram_rules as rules
from tests.support.chat_members import ChatMembers
from tests.support.fake_markup import MarkupEdits
from tests.support.telegram_limits import ChatFloods, NetworkChaos
from tests.support.telegram_rules import JSON_FIELDS, ApiError, as_sent, check_markup, check_text, utf16_len
from tests.support.telegram_rules import parse_html as parse_html  # tests import it from here too

TOKEN = "123456789:TEST-token_abcdefghijklmnopqrstuvwxyz0123"
BOT_ID = 123456789
BOT_USERNAME = "mlm_test_bot"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield


class FakeTelegram(ChatMembers, MarkupEdits):
    def __init__(self) -> None:
        self._init_members()
        self.calls: list[Call] = []
        self.never_started: set[int] = set()  # users who never pressed Start: DMs answer 403
        self.blocked_by: set[int] = set()  # users who blocked the bot
        self.too_many_requests = 0  # the next N sends answer 429
        self.server_errors = 0  # the next N sends answer 502 (Telegram's servers having a moment)
        self.deleted: set[tuple[int, int]] = set()  # (chat_id, message_id) of messages their authors deleted
        self._answered_queries: set[str] = set()
        self.retry_after = 1
        self.flood = ChatFloods()  # Telegram's flood control per chat
        # (method, description) of every call refused as malformed (400): a bug in the bot. The 403s and 429s
        # a test asks for are not listed here; they show in ``calls`` with a "_rejected" key.
        self.rejections: list[tuple[str, str]] = []
        self._closing = False
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._changed = asyncio.Condition()
        self.url = ""
        self.webhook: dict[str, Any] | None = None  # url, secret_token: set by setWebhook
        self.webhook_error: tuple[int, str] | None = None  # (date, message) of the last failed delivery
        self.webhook_retry_s = 0.2  # Telegram waits longer before sending again
        self.webhook_connections = 8  # updates POSTed at once (Telegram's max_connections: 40 by default)
        self.deliveries: list[tuple[int, int | str]] = []  # (update_id, HTTP status or error) of every POST
        self.polls = 0  # getUpdates calls (not kept in ``calls``: a long poll every few seconds)
        self.network = NetworkChaos()  # a network that misbehaves (off unless a test sets its shares)

    # ------------------------------------------------------------- server life
    @contextlib.asynccontextmanager
    async def running(self, port: int = 0, host: str = "127.0.0.1") -> AsyncIterator[FakeTelegram]:
        """Serve until the block ends. ``host="0.0.0.0"`` lets a container reach it (the deployment test)."""
        app = Starlette(routes=[Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"])])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/bot"
        delivery = asyncio.create_task(self._deliver())
        try:
            yield self
        finally:
            async with self._changed:  # release a pending long poll, so the server stops at once
                self._closing = True
                self._changed.notify_all()
            await delivery
            server.should_exit = True
            await task
            sock.close()

    async def _deliver(self) -> None:
        """Webhook mode: POST pending updates (``webhook_connections`` at once, as Telegram opens several
        connections) until each one is answered 2xx."""
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                async with self._changed:
                    await self._changed.wait_for(lambda: self._closing or bool(self.webhook and self._updates))
                    if self._closing:
                        return
                    hook, batch = dict(self.webhook or {}), list(self._updates[: self.webhook_connections])
                results = await asyncio.gather(*(self._post(client, hook, update) for update in batch))
                delivered = {u["update_id"] for u, ok in zip(batch, results, strict=True) if ok}
                async with self._changed:
                    self._updates = [u for u in self._updates if u["update_id"] not in delivered]
                    self._changed.notify_all()
                if len(delivered) < len(batch):
                    await asyncio.sleep(self.webhook_retry_s)

    async def _post(self, client: httpx.AsyncClient, hook: dict[str, Any], update: dict[str, Any]) -> bool:
        headers = {"X-Telegram-Bot-Api-Secret-Token": hook["secret_token"]} if hook.get("secret_token") else {}
        try:
            response = await client.post(hook["url"], json=update, headers=headers)
        except httpx.HTTPError as exc:
            self.deliveries.append((update["update_id"], type(exc).__name__))
            self.webhook_error = (int(time.time()), f"Connection failed: {type(exc).__name__}")
            return False
        self.deliveries.append((update["update_id"], response.status_code))
        if 200 <= response.status_code < 300:
            return True
        self.webhook_error = (int(time.time()), f"Wrong response from the webhook: {response.status_code}")
        return False

    async def _endpoint(self, request: Request) -> Response:
        method = request.path_params["method"]
        if request.path_params["token"] != TOKEN:
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401)
        params = await self._params(request)
        trouble = self.network.draw(method)
        if trouble is not None:
            return await self.network.respond(trouble, lambda: self._answer(method, params))
        return await self._answer(method, params)

    async def _answer(self, method: str, params: dict[str, Any]) -> JSONResponse:
        handler = getattr(self, f"api_{method.lower()}", None)
        try:
            if handler is None:
                raise ApiError(404, f"Not Found: method {method} is not faked")
            result = await handler(params)
        except ApiError as exc:
            # A reply to a message deleted meanwhile is refused too, but no bot can see that coming: not a bug.
            if exc.code == 400 and "replied not found" not in exc.description and not exc.asked_for:
                self.rejections.append((method, exc.description))
            body: dict[str, Any] = {"ok": False, "error_code": exc.code, "description": exc.description}
            if exc.retry_after is not None:
                body["parameters"] = {"retry_after": exc.retry_after}
            await self._record(Call(method, {**params, "_rejected": exc.description}))
            return JSONResponse(body, status_code=exc.code)
        if method.lower() != "getupdates":
            await self._record(Call(method, params))
        return JSONResponse({"ok": True, "result": result})

    async def _params(self, request: Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query_params)
        if request.method == "POST":
            if request.headers.get("content-type", "").startswith("application/json"):
                params.update(await request.json())
            else:
                form = await request.form()
                for key, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        params[key] = {"filename": value.filename, "content": await value.read()}
                    else:
                        params[key] = json.loads(value) if key in JSON_FIELDS else value
        return params

    async def _record(self, call: Call) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    # ------------------------------------------------------------ test helpers
    def sent(self, method: str | None = None, chat_id: int | None = None) -> list[Call]:
        return [
            c for c in self.calls
            if "_rejected" not in c.params
            and (method is None or c.method == method)
            and (chat_id is None or int(c.params.get("chat_id", 0)) == chat_id)
        ]  # fmt: skip

    async def wait_for(self, predicate: Callable[[FakeTelegram], bool], timeout: float = 15) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), timeout)

    async def settle(self, quiet: float = 0.3) -> None:
        """Wait until the bot has made no call for ``quiet`` seconds."""
        while True:
            count = len(self.calls)
            await asyncio.sleep(quiet)
            if len(self.calls) == count:
                return

    async def push(self, kind: str, payload: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        async with self._changed:
            self._updates.append({"update_id": update_id, kind: payload})
            self._changed.notify_all()
        return update_id

    @staticmethod
    def user(user_id: int, first_name: str = "Ann", **extra: Any) -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en", **extra}

    @staticmethod
    def private_chat(user: dict[str, Any]) -> dict[str, Any]:
        return {"id": user["id"], "type": "private", "first_name": user["first_name"]}

    def message(
        self, chat: dict[str, Any], sender: dict[str, Any] | None, text: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"message_id": next(self._message_ids), "date": int(time.time()), "chat": chat}
        if sender is not None:
            message["from"] = sender
        if text is not None:
            message["text"] = text
            command = re.match(r"/[A-Za-z0-9_]+(@\w+)?", text)
            if command:
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(command.group())}]
        message.update(extra)
        self._messages[(chat["id"], message["message_id"])] = message
        return message

    async def send_text(
        self, user: dict[str, Any], text: str | None, chat: dict[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        message = self.message(chat or self.private_chat(user), user, text, **extra)
        await self.push("message", message)
        return message

    async def press(self, user: dict[str, Any], bot_message: dict[str, Any], data: str) -> None:
        await self.push(
            "callback_query",
            {
                "id": str(next(self._update_ids)),
                "from": user,
                "chat_instance": "1",
                "message": bot_message,
                "data": data,
            },
        )

    async def inline(self, user: dict[str, Any], query: str) -> str:
        query_id = str(next(self._update_ids))
        await self.push("inline_query", {"id": query_id, "from": user, "query": query, "offset": ""})
        return query_id

    def stored(self, chat_id: int, message_id: int) -> dict[str, Any]:
        return self._messages[(chat_id, message_id)]

    # ------------------------------------------------------------ Bot API
    async def api_getme(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": BOT_ID, "is_bot": True, "first_name": "MLM Bot", "username": BOT_USERNAME,
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": True,
        }  # fmt: skip

    async def api_deletewebhook(self, params: dict[str, Any]) -> bool:
        async with self._changed:
            self.webhook = None
            self._changed.notify_all()
        return True

    async def api_setwebhook(self, params: dict[str, Any]) -> bool:
        url, secret = params.get("url", ""), params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if url and not re.match(r"https?://[^/]+", url):
            raise ApiError(400, "Bad Request: bad webhook: invalid webhook URL specified")
        async with self._changed:
            self.webhook = {"url": url, "secret_token": secret} if url else None
            self.webhook_error = None
            self._changed.notify_all()
        return True

    async def api_getwebhookinfo(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook["url"] if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates) if self.webhook else 0,
        }
        if self.webhook_error is not None:
            info["last_error_date"], info["last_error_message"] = self.webhook_error
        return info

    async def api_getupdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.polls += 1
        if self.webhook is not None:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook")
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 2.0)
        async with self._changed:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            if not self._updates and timeout:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: bool(self._updates) or self._closing), timeout
                    )
            return list(self._updates[:100])

    async def api_setchatmenubutton(self, params: dict[str, Any]) -> bool:
        return rules.check_menu_button(params.get("menu_button"))

    async def api_setmycommands(self, params: dict[str, Any]) -> bool:
        return rules.check_commands(params["commands"])

    def _check_chat(self, params: dict[str, Any]) -> int:
        chat_id = int(params["chat_id"])
        if chat_id in self.blocked_by:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if chat_id in self.never_started:
            raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        return chat_id

    def _maybe_429(self, chat_id: int | None = None) -> None:
        if chat_id is not None:
            self.flood.spend(chat_id)
        if self.server_errors > 0:
            self.server_errors -= 1
            raise ApiError(502, "Bad Gateway")
        if self.too_many_requests > 0:
            self.too_many_requests -= 1
            raise ApiError(429, f"Too Many Requests: retry after {self.retry_after}", retry_after=self.retry_after)

    def _bot_message(self, chat_id: int, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        chat = {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        if chat_id > 0:
            chat["first_name"] = "User"
        else:
            chat["title"] = "Discussion"
        message = self.message(
            chat, {"id": BOT_ID, "is_bot": True, "first_name": "MLM Bot", "username": BOT_USERNAME}, **content
        )
        reply = params.get("reply_parameters") or {}
        replied = self._messages.get((chat_id, int(reply.get("message_id", 0))))
        if replied is not None:
            message["reply_to_message"] = replied
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        return message

    def _check_reply(self, chat_id: int, params: dict[str, Any]) -> None:
        """A reply to a deleted message: refused, unless allow_sending_without_reply (then it is an ordinary
        message in the chat: outside the comment thread, in a discussion group)."""
        reply = params.get("reply_parameters") or {}
        if reply and (chat_id, int(reply.get("message_id", 0))) in self.deleted:
            if not reply.get("allow_sending_without_reply"):
                raise ApiError(400, "Bad Request: message to be replied not found")
            params["_sent_without_reply"] = True
            params.pop("reply_parameters")

    async def api_sendmessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._check_chat(params)
        check_text(params.get("text"), params.get("parse_mode"), 4096)
        check_markup(params.get("reply_markup"), chat_id)
        self._maybe_429(chat_id)
        self._check_reply(chat_id, params)
        return self._bot_message(chat_id, params, **as_sent(params))

    async def api_senddocument(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._check_chat(params)
        document = params.get("document")
        if not isinstance(document, dict) or not document["content"]:
            raise ApiError(400, "Bad Request: there is no document in the request")
        if params.get("caption"):
            check_text(params["caption"], params.get("parse_mode"), 1024, "caption")
        self._maybe_429(chat_id)
        return self._bot_message(
            chat_id, params, document={"file_id": "doc", "file_unique_id": "doc", "file_name": document["filename"]}
        )

    async def api_sendphoto(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._check_chat(params)
        photo = params.get("photo")
        if not isinstance(photo, dict) or not photo["content"].startswith(b"\x89PNG"):
            raise ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED")
        if params.get("caption"):
            check_text(params["caption"], params.get("parse_mode"), 1024, "caption")
        self._maybe_429(chat_id)
        size = {"file_id": "photo", "file_unique_id": "photo", "width": 960, "height": 540}
        return self._bot_message(chat_id, params, photo=[size])

    async def api_sendpoll(self, params: dict[str, Any]) -> dict[str, Any]:
        """Telegram's limits: question 1-300 characters, 2-10 options of 1-100, a quiz's correct_option_id among
        them, an explanation of at most 200 characters and 2 line feeds."""
        chat_id = self._check_chat(params)
        options = params.get("options") or []
        # With a parse mode (python-telegram-bot's Defaults add HTML), "<mask>" would be an unknown tag.
        question = check_text(params.get("question", ""), params.get("question_parse_mode"), 300, "poll question")
        texts = [
            check_text(o["text"], o.get("text_parse_mode"), 100, "poll option") if isinstance(o, dict) else str(o)
            for o in options
        ]
        if not question or not 2 <= len(texts) <= 10 or not all(texts):
            raise ApiError(400, "Bad Request: POLL_OPTION_INVALID")
        if params.get("type") == "quiz":  # Bot API 9.6: correct_option_ids (correct_option_id before)
            correct = params.get("correct_option_ids") or [params.get("correct_option_id", -1)]
            if not all(0 <= int(c) < len(texts) for c in correct):
                raise ApiError(400, "Bad Request: wrong correct option id")
        explanation = params.get("explanation")
        if explanation is not None:
            explanation = check_text(explanation, params.get("explanation_parse_mode"), 200, "explanation")
        if explanation and explanation.count("\n") > 2:
            raise ApiError(400, "Bad Request: explanation is too long")
        self._maybe_429(chat_id)
        poll_id = f"poll{next(self._update_ids)}"
        poll = {
            "id": poll_id, "question": question, "total_voter_count": 0, "is_closed": False,
            "is_anonymous": params.get("is_anonymous") not in (False, "false", "False"),
            "type": params.get("type", "regular"), "allows_multiple_answers": False,
            "allows_revoting": False, "members_only": False,  # Bot API 9.6 and 10.0
            # Bot API 9.6: every option has a persistent id
            "options": [{"text": t, "voter_count": 0, "persistent_id": f"{poll_id}-{n}"} for n, t in enumerate(texts)],
        }  # fmt: skip
        if params.get("type") == "quiz":
            poll["correct_option_ids"] = [int(c) for c in correct]
        return self._bot_message(chat_id, params, poll=poll)

    async def answer_poll(self, user: dict[str, Any], poll_id: str, option_ids: list[int]) -> int:
        """A person votes in a non-anonymous poll: Telegram sends the bot a ``poll_answer`` update."""
        persistent = [f"{poll_id}-{n}" for n in option_ids]
        return await self.push(
            "poll_answer",
            {"poll_id": poll_id, "user": user, "option_ids": option_ids, "option_persistent_ids": persistent},
        )

    async def api_editmessagetext(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        stored = self._messages.get((chat_id, int(params["message_id"])))
        if stored is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        check_text(params.get("text"), params.get("parse_mode"), 4096)
        check_markup(params.get("reply_markup"), chat_id)
        sent = as_sent(params)
        if stored.get("_html") == sent["_html"] and stored.get("reply_markup") == params.get("reply_markup"):
            raise ApiError(400, "Bad Request: message is not modified")
        self.flood.spend(chat_id)
        stored.update(sent)
        stored["reply_markup"] = params.get("reply_markup")
        return stored

    async def api_sendchataction(self, params: dict[str, Any]) -> bool:
        self._check_chat(params)
        return True

    async def api_answercallbackquery(self, params: dict[str, Any]) -> bool:
        if len(params.get("text") or "") > 200:
            raise ApiError(400, "Bad Request: callback answer text is too long")
        if params["callback_query_id"] in self._answered_queries:  # Telegram takes one answer per press
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self._answered_queries.add(params["callback_query_id"])
        return True

    async def api_setmessagereaction(self, params: dict[str, Any]) -> bool:
        return True

    async def api_answerinlinequery(self, params: dict[str, Any]) -> bool:
        results = params.get("results", [])
        if len(results) > 50:
            raise ApiError(400, "Bad Request: RESULTS_TOO_MUCH")
        ids = [r["id"] for r in results]
        if len(set(ids)) != len(ids) or any(not 1 <= len(i.encode()) <= 64 for i in ids):
            raise ApiError(400, "Bad Request: RESULT_ID_INVALID")
        for result in results:
            if not result.get("title"):
                raise ApiError(400, "Bad Request: RESULT_TITLE_EMPTY")
            content = result["input_message_content"]
            check_text(content.get("message_text"), content.get("parse_mode"), 4096)
            check_markup(result.get("reply_markup"))
        button = params.get("button")
        if button and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", button.get("start_parameter", "")):
            raise ApiError(400, "Bad Request: START_PARAM_INVALID")
        if button and not 1 <= len(button.get("text", "")) <= 64:
            raise ApiError(400, "Bad Request: BUTTON_TEXT_INVALID")
        return True
