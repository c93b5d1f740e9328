"""Telegram's API is not always 200 or 429: with 8% of sends, edits and answers getting a 502, 3% a connection
dropped and 2% an answer that comes too late (the message *was* delivered), every person still gets their
answer; a message is sent again at most once. The real bot against the fake Bot API."""

from __future__ import annotations

from pathlib import Path

from bot.flood_control import network_retries
from tests.support.bot_harness import bot_settings, running_bot
from tests.support.fake_telegram import FakeTelegram, parse_html

PEOPLE = range(700, 730)


async def test_every_person_gets_their_answer_through_a_flaky_network(bert_dir: Path, tmp_path: Path) -> None:
    fake = FakeTelegram()
    async with fake.running():
        async with running_bot(bot_settings(fake, bert_dir, tmp_path), fake):
            fake.network.shares = (0.08, 0.03, 0.02)
            for person in PEOPLE:
                await fake.send_text(fake.user(person), "The cat sat on the [MASK].")
                await fake.send_text(fake.user(person), "/help")

            def answered(f: FakeTelegram, person: int) -> bool:
                texts = [parse_html(c.params["text"]) for c in f.sent("sendMessage", person)]
                return any("Best guess" in t for t in texts) and any("How to use me" in t for t in texts)

            await fake.wait_for(lambda f: all(answered(f, p) for p in PEOPLE), timeout=90)
            await fake.settle(0.5)
        troubles = {kind for _, kind in fake.network.seen}
        assert fake.rejections == []
    assert troubles == {"502", "drop", "timeout"}, fake.network.seen  # each kind of trouble happened
    for person in PEOPLE:  # a reply that timed out may come twice (it had arrived), never three times
        texts = [parse_html(c.params["text"]) for c in fake.sent("sendMessage", person)]
        assert sum("Best guess" in t for t in texts) <= 2 and sum("How to use me" in t for t in texts) <= 2


def test_a_call_that_may_have_arrived_is_repeated_once_an_idempotent_one_more() -> None:
    import httpx
    from telegram.error import NetworkError, TimedOut

    def failure(cause: Exception, kind: type[NetworkError] = NetworkError) -> NetworkError:
        try:
            raise kind("trouble") from cause
        except NetworkError as exc:
            return exc

    refused = failure(httpx.ConnectError("refused"))  # never left this machine
    dropped = failure(httpx.RemoteProtocolError("peer closed connection"))
    late = failure(httpx.ReadTimeout("read"), TimedOut)
    assert network_retries("sendMessage", refused) == 3
    assert network_retries("sendMessage", dropped) == network_retries("sendMessage", late) == 1
    assert network_retries("editMessageText", late) == 3 and network_retries("answerCallbackQuery", late) == 1
