"""The follow-gate (REQUIRE_CHANNEL), end to end on the fake Bot API, which answers getChatMember with each status
and refuses the member list to a bot that is no administrator: members get the guide, others one message with the
channel's button and "✅ I've joined"; the gate opens (one warning) when the bot cannot tell; only guides are gated."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.bot_harness import bot_settings, running_bot
from tests.support.chats import bot_messages, keyboard, lesson_started, logged_rows
from tests.support.fake_telegram import FakeTelegram, parse_html

pytestmark = pytest.mark.usefixtures("no_token_in_logs")
CHANNEL = {"id": -1001777000333, "type": "channel", "title": "Creator's channel", "username": "creatorchan"}
ASKED = "One step first"


@pytest.fixture
def settings(fake: FakeTelegram, bert_dir: Path, tmp_path: Path):
    fake.add_channel(CHANNEL)
    return bot_settings(fake, bert_dir, tmp_path, require_channel="@creatorchan")


def asked_to_join(fake: FakeTelegram, chat_id: int) -> dict | None:
    return next((m for m in bot_messages(fake, chat_id) if ASKED in m.get("text", "")), None)


def member_checks(fake: FakeTelegram, user_id: int) -> int:
    """How often the bot asked Telegram about this person (refused calls too)."""
    return sum(c.method == "getChatMember" and str(c.params.get("user_id")) == str(user_id) for c in fake.calls)


STATUSES = [
    ("member", {}, True), ("administrator", {}, True), ("creator", {}, True),
    ("restricted", {"is_member": True}, True), ("restricted", {"is_member": False}, False),
    ("left", {}, False), ("kicked", {}, False),
]  # fmt: skip


@pytest.mark.parametrize(("status", "fields", "admitted"), STATUSES)
async def test_each_member_status(fake: FakeTelegram, live_bot_repo, status: str, fields: dict, admitted: bool) -> None:
    fake.set_status(CHANNEL["id"], 500, status, **fields)
    await fake.send_text(fake.user(500), "MLM")
    await fake.wait_for(lambda f: lesson_started(f, 500) or asked_to_join(f, 500), timeout=30)
    await fake.settle(0.3)
    assert lesson_started(fake, 500) is admitted
    if not admitted:
        asked = asked_to_join(fake, 500)
        assert "Creator's channel" in asked["text"] and len(bot_messages(fake, 500)) == 1
        assert keyboard(asked) == [
            [{"text": "📢 Join Creator's channel", "url": "https://t.me/creatorchan"}],
            [{"text": "✅ I've joined", "callback_data": "join:mlm:c"}],
        ]


async def test_ive_joined_checks_again_and_only_guides_are_gated(fake: FakeTelegram, live_bot_repo) -> None:
    ann = fake.user(501)
    await fake.send_text(ann, "MLM")
    await fake.wait_for(lambda f: asked_to_join(f, 501), timeout=30)
    asked = asked_to_join(fake, 501)
    await fake.press(ann, asked, "join:mlm:c")  # not yet
    await fake.wait_for(lambda f: len(f.sent("answerCallbackQuery")) == 1, timeout=30)
    assert fake.sent("answerCallbackQuery")[0].params["text"].startswith("Not yet")
    assert not lesson_started(fake, 501)

    fake.set_status(CHANNEL["id"], 501, "member")  # she joins
    await fake.press(ann, asked, "join:mlm:c")
    await fake.wait_for(lambda f: lesson_started(f, 501), timeout=30)
    assert fake.sent("answerCallbackQuery")[1].params["text"].startswith("✅ Thanks for joining")
    assert "You commented MLM" in next(m for m in bot_messages(fake, 501) if ASKED not in m["text"])["text"]
    checks = member_checks(fake, 501)
    assert checks == 3  # the keyword, then each press asked again (never the kept "no")

    # A second guide within minutes: the kept answer, no call. Predictions and the quiz are never gated.
    await fake.send_text(ann, "/guide")
    await fake.wait_for(lambda f: lesson_started(f, 501, 2), timeout=30)
    fake.set_status(CHANNEL["id"], 502, "left")
    await fake.send_text(fake.user(502), "The cat sat on the [MASK].")
    await fake.send_text(fake.user(502), "/quiz")
    await fake.wait_for(lambda f: bool(f.sent("sendPoll", 502)), timeout=30)
    await fake.wait_for(lambda f: any("Best guess" in parse_html(c.params["text"]) for c in f.sent("sendMessage", 502)))
    assert member_checks(fake, 501) == checks and member_checks(fake, 502) == 0
    gate_rows = await logged_rows(live_bot_repo, "gate", 2)
    assert [(r.trigger, r.guide, r.user_id) for r in gate_rows] == [("shown", "mlm", 501), ("passed", "mlm", 501)]


async def test_a_bot_that_is_no_admin_opens_the_gate_with_one_warning(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_channel(CHANNEL, bot_is_admin=False)
    settings = bot_settings(fake, bert_dir, tmp_path, require_channel=str(CHANNEL["id"]))
    caplog.set_level(logging.WARNING, logger="bot.channel_gate")
    async with running_bot(settings, fake):
        for user_id in (503, 504):
            await fake.send_text(fake.user(user_id), "MLM")
            await fake.wait_for(lambda f, u=user_id: lesson_started(f, u), timeout=30)
    warnings = [r.getMessage() for r in caplog.records if "REQUIRE_CHANNEL" in r.getMessage()]
    assert len(warnings) == 1 and "not an administrator" in warnings[0] and "everyone gets the guides" in warnings[0]
    assert member_checks(fake, 503) == member_checks(fake, 504) == 0  # never asked: it cannot tell


async def test_a_gate_that_stops_working_opens_and_says_so_once(
    fake: FakeTelegram, live_bot_repo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.channel_gate")
    fake.bot_not_admin.add(CHANNEL["id"])  # the creator demoted the bot while it runs
    for user_id in (505, 506):
        await fake.send_text(fake.user(user_id), "MLM")
        await fake.wait_for(lambda f, u=user_id: lesson_started(f, u), timeout=30)
    warnings = [r.getMessage() for r in caplog.records if "REQUIRE_CHANNEL" in r.getMessage()]
    assert len(warnings) == 1 and "member list is inaccessible" in warnings[0].lower()
    assert member_checks(fake, 505) == 1 and member_checks(fake, 506) == 0


async def test_a_channel_that_does_not_exist_opens_the_gate(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = bot_settings(fake, bert_dir, tmp_path, require_channel="@nosuchchannel")
    caplog.set_level(logging.WARNING, logger="bot.channel_gate")
    async with running_bot(settings, fake):
        await fake.send_text(fake.user(507), "MLM")
        await fake.wait_for(lambda f: lesson_started(f, 507), timeout=30)
    assert any("chat not found" in r.getMessage().lower() for r in caplog.records)


async def test_a_guide_with_gate_false_is_never_gated(fake: FakeTelegram, bert_dir: Path, tmp_path: Path) -> None:
    open_guide = tmp_path / "guides" / "free"
    open_guide.mkdir(parents=True)
    (open_guide / "guide.toml").write_text('title = "Free"\nkeywords = ["FREE"]\ngate = false\n')
    (open_guide / "01.md").write_text("# Free for all\nNo channel needed.\n")
    fake.add_channel(CHANNEL)
    settings = bot_settings(
        fake, bert_dir, tmp_path, require_channel="@creatorchan", guides_dir=str(tmp_path / "guides")
    )
    async with running_bot(settings, fake):
        await fake.send_text(fake.user(508), "FREE")
        await fake.wait_for(lambda f: any("Free for all" in m["text"] for m in bot_messages(f, 508)), timeout=30)
        await fake.send_text(fake.user(508), "MLM")
        await fake.wait_for(lambda f: asked_to_join(f, 508), timeout=30)
    assert member_checks(fake, 508) == 1
