"""The playground as the bot's Mini App (MINI_APP_URL): served by the bot's own HTTP server, opened from the chat's
menu button, under the lesson's last page and under each prediction; its API answers only Telegram-signed initData,
answers as the chat does, counts against the person's budget, and its rows go with /forget."""

from __future__ import annotations

import pytest
from httpx import AsyncClient

from bot.config import SettingsError, load_settings
from models.engine.core import FillMaskEngine
from tests.support.bot_harness import bot_settings, eventually, free_port, running_bot
from tests.support.chats import bot_messages, keyboard, lesson_pages, lesson_started, replies
from tests.support.fake_telegram import TOKEN, FakeTelegram
from tests.support.mini_app import signed_init_data

pytestmark = pytest.mark.usefixtures("no_token_in_logs")

URL = "https://bot.example.com/app"
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("bad", ["http://bot.example.com/app", "https://bot.example.com/", "bot.example.com/app"])
def test_mini_app_url_must_be_the_https_playground(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("MINI_APP_URL", bad)
    with pytest.raises(SettingsError, match="MINI_APP_URL: must be the playground's public https://"):
        load_settings()


async def test_the_bots_mini_app_end_to_end(
    fake: FakeTelegram, bert_dir, tmp_path, bert_engine: FillMaskEngine
) -> None:
    port = free_port()
    settings = bot_settings(fake, bert_dir, tmp_path, mini_app_url=URL, metrics_port=port, predictions_per_minute=3)
    sentence = "The cat sat on the [MASK]."
    async with running_bot(settings, fake) as repo, AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        # The chat's menu button opens it.
        await fake.wait_for(lambda f: bool(f.sent("setChatMenuButton")))
        menu = fake.sent("setChatMenuButton")[0].params["menu_button"]
        assert menu == {"type": "web_app", "text": "Playground", "web_app": {"url": URL}}
        # Under a prediction, in the person's language.
        ann = fake.user(4242, username="ann")
        await fake.send_text(ann, sentence)
        (answer,) = await replies(fake, 4242)
        buttons = [b for row in answer.params["reply_markup"]["inline_keyboard"] for b in row]
        assert {"text": "🧪 Playground", "web_app": {"url": f"{URL}?lang=english"}} in buttons
        # Under the lesson's last page.
        await fake.send_text(ann, "/guide")
        await fake.wait_for(lambda f: lesson_started(f, 4242))
        for step in ("guide:mlm:p:6", "guide:mlm:p:7", "guide:mlm:p:8"):  # Skip to the code, then Next, Next
            count = len(lesson_pages(fake, 4242))
            await fake.press(ann, lesson_pages(fake, 4242)[-1], step)
            await fake.wait_for(lambda f, n=count: len(lesson_pages(f, 4242)) > n)
        assert "Learn more" in lesson_pages(fake, 4242)[-1]["text"]
        last = [b for row in keyboard(lesson_pages(fake, 4242)[-1]) for b in row]
        assert any(b.get("web_app") == {"url": f"{URL}?lang=english"} for b in last)
        # The page, and its API with Telegram-signed initData: the chat's words for the same sentence.
        page = await http.get("/app")
        assert page.status_code == 200 and "https://telegram.org/js/telegram-web-app.js" in page.text
        assert "script-src 'self' https://telegram.org;" in page.headers["content-security-policy"]
        signed = {"Authorization": f"tma {signed_init_data(TOKEN, 4242)}"}
        reply = await http.post("/app/api/fill-mask", json={"text": sentence}, headers=signed)
        assert reply.status_code == 200
        chat = bert_engine.fill(sentence, top_k=5, words_only=True).masks[0]
        assert [w["word"] for w in reply.json()["masks"][0]] == [p.token_str.strip() for p in chat]
        assert all(p.token_str.strip() in answer.params["text"] for p in chat)  # and the chat said the same
        # Bad input: the chat's one-line error. Forged or missing initData: 401.
        bad = await http.post("/app/api/fill-mask", json={"text": "no mask here"}, headers=signed)
        assert bad.status_code == 400 and "[MASK]" in bad.json()["error"]
        for headers in ({}, {"Authorization": f"tma {signed_init_data('1:another-bots-token-xxxxxxxxxxxxxx', 4242)}"}):
            assert (await http.post("/app/api/fill-mask", json={"text": sentence}, headers=headers)).status_code == 401
        # The same per-minute budget as the chat (3 here; the chat's prediction took one, the two calls above two).
        over = await http.post("/app/api/fill-mask", json={"text": sentence}, headers=signed)
        assert over.status_code == 429 and "Try again in" in over.json()["error"]
        rows = await eventually(lambda: _playground_rows(repo, 4242, 3))
        assert [(r.trigger, r.outcome) for r in rows] == [
            ("fill-mask", "ok"),
            ("fill-mask", "no_mask"),
            ("fill-mask", "rate_limited"),
        ]
        # /forget removes them with the rest.
        await fake.send_text(ann, "/forget")
        await fake.wait_for(lambda f: any("forget:yes" in str(m.get("reply_markup")) for m in bot_messages(f, 4242)))
        question = [m for m in bot_messages(fake, 4242) if "forget:yes" in str(m.get("reply_markup"))][-1]
        await fake.press(ann, question, "forget:yes")
        await fake.wait_for(lambda f: len(f.sent("editMessageText", 4242)) >= 1)
        assert await eventually(lambda: _no_rows(repo, 4242))


async def _playground_rows(repo, user_id: int, count: int):
    rows = [r for r in await repo.interactions.all() if r.user_id == user_id and r.kind == "playground"]
    return rows if len(rows) >= count else None


async def _no_rows(repo, user_id: int) -> bool:
    return not [r for r in await repo.interactions.all() if r.user_id == user_id]


async def test_odd_bodies_get_a_one_line_error_not_a_500(bert_dir) -> None:
    """Whatever the page (or anyone on loopback) posts: too big (read no further than 16 KB), nested past reason,
    not JSON, not text, too long. Each gets 400 with the chat's one-line error."""
    from httpx import ASGITransport
    from starlette.applications import Starlette

    from bot.http.playground import Playground
    from bot.text.render import Renderer
    from models.serving.client import LocalFillMask
    from models.settings import ModelSettings

    model = LocalFillMask(ModelSettings(model_name=str(bert_dir), model_device="cpu"))
    await model.start()
    app = Starlette(routes=Playground(model, Renderer()).routes())
    bodies = [b"x" * 1_000_000, b"[" * 5_000 + b"]" * 5_000, b"\xff\xfe", b"null", b'{"text": 5}', b'{"text": ""}',
              ('{"text": "%s [MASK]"}' % ("a" * 3_000)).encode()]  # fmt: skip
    try:
        async with AsyncClient(transport=ASGITransport(app), base_url="http://127.0.0.1") as http:
            for body in bodies:
                reply = await http.post("/app/api/fill-mask", content=body, headers=JSON)
                assert reply.status_code == 400, (body[:20], reply.text)
                assert reply.json()["error"] and "\n" not in reply.json()["error"]
    finally:
        await model.close()
