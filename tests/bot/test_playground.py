"""The playground in a real browser: Playwright driving Debian's Chromium (``executable_path``; Playwright's own
browser download is not reachable here). ``mlm-bot playground`` end to end (type, tap a word, read the bars, the
tabs, a 360 px phone), and the Mini App: initData signed with the bot's token is answered, forged or expired
initData gets 401 and a visible error. Screenshots of each state go to the test's temp dir.

Without Chromium or Playwright these tests are skipped with the reason; ``.ci/run`` installs Chromium when it can
and says loudly when it cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.engine.core import FillMaskEngine
from tests.support.bot_harness import free_port
from tests.support.fake_telegram import TOKEN
from tests.support.mini_app import signed_init_data

MLM_BOT = str(Path(sys.executable).with_name("mlm-bot"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra has it)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium)")


def serve(model_dirs: dict[str, Path], tmp_path: Path, *extra: str, **env: str) -> Iterator[str]:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("TELEGRAM_BOT_TOKEN", "LOG_LEVEL")}
    environ.update(COMPARE_MODELS=f"{model_dirs['bert']},{model_dirs['roberta']}", HF_HUB_OFFLINE="1", **env)
    process = subprocess.Popen(
        [MLM_BOT, "playground", "--model", str(model_dirs["bert"]), "--port", str(port), *extra],
        cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/app", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def local(model_dirs: dict[str, Path], tmp_path: Path) -> Iterator[str]:
    yield from serve(model_dirs, tmp_path)


@pytest.fixture
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def bars(page) -> list[tuple[str, str]]:
    return [(r.locator(".word").inner_text(), r.locator(".pct").inner_text()) for r in page.locator("#bars .row").all()]


def test_local_playground_type_tap_and_read_the_bars(
    local: str, browser, bert_engine: FillMaskEngine, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 360, "height": 740})
    page.goto(f"{local}/app")
    page.wait_for_selector("#bars .row")
    page.screenshot(path=tmp_path / "1-start.png", full_page=True)
    # Type a sentence without a mask: chips, and a note to tap one.
    page.fill("#sentence", "The dog sat on the mat.")
    page.wait_for_selector("#needs-mask:not([hidden])")
    chips = page.locator("#chips .chip")
    assert chips.all_inner_texts() == ["The", "dog", "sat", "on", "the", "mat"]
    # Tap "mat": hidden, and the bars are the model's (as the fill-mask pipeline ranks them).
    chips.nth(5).click()
    assert page.input_value("#sentence") == "The dog sat on the [MASK]."
    expected = bert_engine.fill("The dog sat on the [MASK].", top_k=5, words_only=True).masks[0]
    page.wait_for_function(
        "w => [...document.querySelectorAll('#bars .word')].map(e => e.textContent)[0] === w",
        arg=expected[0].token_str.strip(),
    )
    shown = bars(page)
    assert [w for w, _ in shown] == [p.token_str.strip() for p in expected]
    assert shown[0][1] == f"{expected[0].score * 100:.1f}%" or expected[0].score < 0.001
    # No horizontal scroll on a 360 px phone.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=tmp_path / "2-tapped.png", full_page=True)
    # Compare: each model of COMPARE_MODELS, side by side.
    page.click("#tab-compare")
    page.wait_for_selector("#compare .model-card .row")
    assert page.locator("#compare .model-card h2").all_inner_texts() == ["BERT", "RoBERTa"]
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=tmp_path / "3-compare.png", full_page=True)
    # Experiments: a ready sentence fills the box and answers on the first tab.
    page.click("#tab-experiments")
    page.locator("#experiments button").nth(1).click()
    assert page.input_value("#sentence") == "I went to the [MASK] to swim."
    swim = bert_engine.fill("I went to the [MASK] to swim.", top_k=5, words_only=True).masks[0][0].token_str.strip()
    page.wait_for_function(
        "w => document.querySelector('#bars .word') && document.querySelector('#bars .word').textContent === w",
        arg=swim,
    )
    page.screenshot(path=tmp_path / "4-experiment.png", full_page=True)
    # Bad input: the chat's one-line error, visible.
    page.fill("#sentence", "[MASK] " * 9)
    page.wait_for_selector("#error:not([hidden])")
    assert "masks" in page.inner_text("#error")
    # A strict Content-Security-Policy, and nothing loaded from elsewhere.
    policy = httpx.get(f"{local}/app").headers["content-security-policy"]
    assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy


def test_the_mini_app_answers_signed_init_data_and_refuses_forged(
    model_dirs: dict[str, Path], tmp_path: Path, browser, bert_engine: FillMaskEngine
) -> None:
    """The same page as a Mini App (--allow-remote with the bot's token): a stand-in ``window.Telegram.WebApp``
    carries initData signed with the test token, and the theme; forged or day-old initData gets 401 and the page
    shows why."""
    servers = serve(model_dirs, tmp_path, "--host", "0.0.0.0", "--allow-remote", TELEGRAM_BOT_TOKEN=TOKEN)
    url = next(servers)
    try:

        def open_with(init_data: str):
            page = browser.new_page(viewport={"width": 360, "height": 740})
            theme = {"bg_color": "#102030", "text_color": "#f0f0f0", "button_color": "#ff8800"}
            web_app = f"{{initData: {json.dumps(init_data)}, themeParams: {json.dumps(theme)}, ready() {{}}, "
            stand_in = f"window.Telegram = {{WebApp: {web_app}expand() {{}}, onEvent() {{}}}}}};"
            # Telegram's script is not reachable here: its URL answers with the stand-in.
            page.route("https://telegram.org/js/telegram-web-app.js", lambda r: r.fulfill(body=stand_in,
                       content_type="text/javascript"))  # fmt: skip
            page.goto(f"{url}/app")
            return page

        good = open_with(signed_init_data(TOKEN))
        good.wait_for_selector("#bars .row")
        top = bert_engine.fill("The cat sat on the [MASK].", top_k=5, words_only=True).masks[0][0].token_str.strip()
        assert bars(good)[0][0] == top
        assert good.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(16, 32, 48)"  # the theme
        good.screenshot(path=tmp_path / "5-mini-app.png", full_page=True)
        for forged in (
            signed_init_data("123:another-bots-token-xxxxxxxxxxxx"),
            signed_init_data(TOKEN, age_s=2 * 86400),
        ):
            page = open_with(forged)
            page.wait_for_selector("#error:not([hidden])")
            assert "Playground button" in page.inner_text("#error") and not page.locator("#bars .row").count()
        page.screenshot(path=tmp_path / "6-forged.png", full_page=True)
        answer = httpx.post(f"{url}/app/api/fill-mask", json={"text": "The cat sat on the [MASK]."})
        assert answer.status_code == 401
        answer = httpx.post(
            f"{url}/app/api/fill-mask", json={"text": "The cat sat on the [MASK]."},
            headers={"Authorization": f"tma {signed_init_data(TOKEN)}"},
        )  # fmt: skip
        assert answer.status_code == 200 and answer.json()["masks"][0][0]["word"] == top
    finally:
        servers.close()


def test_the_playground_refuses_another_address_without_a_token(tmp_path: Path) -> None:
    done = subprocess.run(
        [MLM_BOT, "playground", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--allow-remote" in done.stderr


def test_a_busy_playground_says_so_and_tries_again_by_itself(local: str, browser, tmp_path: Path) -> None:
    """The server's 429 (its queue holds more than a second of work; tests/bot/test_viral_load.py makes the real
    one) comes with Retry-After: the page shows the line, waits, asks again, and draws the bars."""
    busy = {"error": "⏳ Busy: many people are trying the playground right now. Trying again in 1 s…",
            "code": "playground_busy", "retry_after": 1}  # fmt: skip
    calls: list[float] = []

    def handle(route) -> None:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            route.fulfill(status=429, headers={"Retry-After": "1"}, content_type="application/json",
                          body=json.dumps(busy))  # fmt: skip
        else:
            route.continue_()

    page = browser.new_page(viewport={"width": 360, "height": 740})
    page.route("**/app/api/fill-mask", handle)
    page.goto(f"{local}/app")
    page.wait_for_selector("#error:not([hidden])")
    assert "Trying again" in page.inner_text("#error")
    page.screenshot(path=tmp_path / "7-busy.png", full_page=True)
    page.wait_for_selector("#bars .row", timeout=15_000)
    page.wait_for_selector("#error", state="hidden")
    assert len(calls) == 3, "asked again after each 429, then stopped"
    assert calls[1] - calls[0] >= 0.9 and calls[2] - calls[1] >= 0.9, "waited the Retry-After each time"
    page.screenshot(path=tmp_path / "8-after-busy.png", full_page=True)
