"""Issue 31 on the Telegram side: the answer says when the model runs in a reduced precision, and /compare stays
within COMPARE_MEMORY_MB."""

from __future__ import annotations

from pathlib import Path

from tests.support.bot_harness import bot_settings, running_bot
from tests.support.chats import replies
from tests.support.fake_telegram import FakeTelegram, parse_html


async def test_the_answer_says_int8_only_when_the_model_runs_in_int8(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    sentence = "The cat sat on the [MASK]."
    for dtype, user in (("int8", 60), ("float32", 61)):
        settings = bot_settings(fake, bert_dir, tmp_path / dtype, model_dtype=dtype, model_device="cpu")
        async with running_bot(settings, fake):
            await fake.send_text(fake.user(user), sentence)
            (answer,) = await replies(fake, user)
        visible = parse_html(answer.params["text"])
        assert "Best guess" in visible
        if dtype == "int8":
            assert "in int8 to answer faster" in visible
        else:
            assert "int8" not in visible and "⚙️" not in visible
