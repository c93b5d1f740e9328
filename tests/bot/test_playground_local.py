"""``mlm-bot playground`` answers this machine's browser only: a web page elsewhere that makes the browser send a
request (a form post, or DNS rebinding: a name of the attacker's that now points at 127.0.0.1) is refused, by its
Host, its Origin, or a body that is not JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient
from starlette.applications import Starlette

from bot.http.playground import Playground
from bot.text.render import Renderer
from models.serving.client import LocalFillMask
from models.settings import ModelSettings

SENTENCE = {"text": "The cat sat on the [MASK]."}


@pytest.fixture
async def http(bert_dir: Path) -> AsyncIterator[AsyncClient]:
    model = LocalFillMask(ModelSettings(model_name=str(bert_dir), model_device="cpu"))
    await model.start()
    app = Starlette(routes=Playground(model, Renderer()).routes())
    try:
        async with AsyncClient(transport=ASGITransport(app), base_url="http://127.0.0.1:8080") as client:
            yield client
    finally:
        await model.close()


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.1"])
async def test_this_machines_names_are_answered(http: AsyncClient, host: str) -> None:
    reply = await http.post("/app/api/fill-mask", json=SENTENCE, headers={"Host": host})
    assert reply.status_code == 200 and reply.json()["masks"]
    assert (await http.get("/app", headers={"Host": host, "Origin": f"http://{host}"})).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "", "[::1"])
async def test_another_name_that_points_here_is_refused(http: AsyncClient, host: str) -> None:
    """DNS rebinding: the attacker's page, at evil.example, now resolves to 127.0.0.1 and reads the answers."""
    reply = await http.post("/app/api/fill-mask", json=SENTENCE, headers={"Host": host})
    assert reply.status_code == 403
    assert (await http.get("/app", headers={"Host": host})).status_code == 403


async def test_a_page_elsewhere_cannot_post_here(http: AsyncClient) -> None:
    cross_site = {"Origin": "https://evil.example"}
    assert (await http.post("/app/api/fill-mask", json=SENTENCE, headers=cross_site)).status_code == 403
    # A form's body (what a page can send without asking the browser's permission first): not JSON, refused.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        reply = await http.post(
            "/app/api/fill-mask",
            content=b'{"text": "The cat sat on the [MASK]."}',
            headers={"Content-Type": content_type},
        )
        assert reply.status_code == 415 and reply.json()["code"] == "bad_request"
    same = {"Origin": "http://127.0.0.1:8080", "Content-Type": "application/json; charset=utf-8"}
    assert (await http.post("/app/api/fill-mask", content=b'{"text": "a [MASK]."}', headers=same)).status_code == 200
