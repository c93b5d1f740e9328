"""Every in-memory map keyed by something a stranger chooses (a user, a chat, a post, a query, a sentence) stays
bounded: a million distinct ids through each, and its size never passes its cap."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.budgets import KEEP, ActionBudget, ModelCallLimit
from bot.chosen_languages import Languages
from bot.config import GuideSettings
from bot.context import ANSWERED_KEPT, POSTS_KEPT, QUIZZES_KEPT, BotData
from bot.edits import MessageEdits
from bot.flood_control import BotRateLimiter
from bot.public_replies import CommentReplies
from bot.services import CLAIMS_KEPT, TAP_SENTENCES_CHARS, BotServices
from bot.storage.writer import FORGOTTEN_KEEP, Forgotten, InteractionWriter
from bot.text.render import Renderer

MILLION = 1_000_000


def test_the_model_gates_forget_people_past_their_cap() -> None:
    predictions, inline = ModelCallLimit(20), ModelCallLimit(60, one_at_a_time=False)
    for user_id in range(MILLION):
        predictions.check(user_id)
        inline.check(user_id)  # inline mode never calls enter(): it used to keep every user ever seen
    assert len(predictions) <= KEEP and len(inline) <= KEEP
    with predictions.enter(5) as refusal:
        assert refusal is None
    assert predictions._in_flight == set()


async def test_the_action_budget_stays_bounded() -> None:
    budget = ActionBudget(per_minute=20, in_flight=4)
    for person in range(MILLION):
        await budget.admit(person)
        budget.done(person)
    sizes = budget.sizes()
    assert sizes["buckets"] <= KEEP and sizes["warned"] <= KEEP and sizes["running"] == 0


async def test_the_per_chat_pacing_keeps_only_the_chats_of_the_last_minute() -> None:
    """A bucket stays while calls are in it or wait for it, then a minute (by when it has leaked empty): a viral
    day's people each cost a bucket for a minute, not for the life of the process (and never more than the cap)."""
    clock = [0.0]
    limiter = BotRateLimiter(private_burst=1, private_per_second=20)
    limiter._idle = type(limiter._idle)(limiter._idle.maxsize, ttl=60.0, timer=lambda: clock[0])  # a clock to move
    waiting = asyncio.Event()

    async def request() -> None:
        return None

    async def slow() -> None:
        await waiting.wait()

    for chat_id in range(1_000):
        await limiter.process_request(request, (), {}, "sendMessage", {"chat_id": chat_id}, None)
    held = asyncio.create_task(limiter.process_request(slow, (), {}, "sendMessage", {"chat_id": 5}, None))
    queued = asyncio.create_task(limiter.process_request(request, (), {}, "sendMessage", {"chat_id": 5}, None))
    await asyncio.sleep(0.01)
    assert limiter.sizes()["busy"] == 1, "chat 5's bucket is in use: kept whatever the clock says"
    clock[0] = 61.0
    await limiter.process_request(request, (), {}, "sendMessage", {"chat_id": -100}, None)  # the cache expires
    assert limiter.sizes() == {"chats": 2, "busy": 1, "held": 0}  # chat 5's (busy) and the group's (idle now)
    waiting.set()
    await asyncio.gather(held, queued)
    assert limiter.sizes()["busy"] == 0 and limiter.sizes()["chats"] == 2


async def test_language_choices_in_memory_stay_bounded() -> None:
    async def never_chose(user_id: int) -> None:
        return None

    languages = Languages(never_chose)
    for user_id in range(MILLION):
        languages.remember(user_id, "hinglish")
    assert len(languages) <= languages.keep
    assert await languages.of(MILLION - 1) == "hinglish", "the newest are the ones kept"


def services() -> BotServices:
    renderer = Renderer()
    return BotServices(
        settings=GuideSettings(_env_file=None),  # type: ignore[arg-type,call-arg]: what the guides need
        model=None,  # type: ignore[arg-type]
        repo=None,  # type: ignore[arg-type]
        writer=None,  # type: ignore[arg-type]
        renderer=renderer,
        predict_limit=ModelCallLimit(20),
        inline_limit=ModelCallLimit(60, one_at_a_time=False),
        comment_replies=CommentReplies(renderer, lambda entry: asyncio.sleep(0)),
        languages=Languages(lambda user_id: asyncio.sleep(0)),
    )


async def test_tap_sentences_and_comment_claims_stay_bounded() -> None:
    s = services()
    written: list[object] = []

    async def keep(op: object) -> None:  # the writer: the database keeps every one, memory the newest
        written.append(op)

    s.writer = SimpleNamespace(log=keep)  # type: ignore[assignment]
    for n in range(MILLION):
        await s.keep_sentence(s.remember_sentence("a sentence", n))
        s.claim_in_memory(f"-100:{n}", n)
    assert len(s.claims_in_memory) <= CLAIMS_KEPT
    assert len(written) == MILLION


def test_tap_sentences_in_memory_are_capped_by_their_length_not_their_count() -> None:
    """A sentence is up to 4,096 characters: 10,000 of them were up to 160 MB. The newest stay, the oldest go (a
    tap on one of those finds it in the database)."""
    s = services()
    keys = [s.remember_sentence("ж" * 4_096, n) for n in range(10_000)]
    assert s.tap_sentences.currsize <= TAP_SENTENCES_CHARS
    assert sum(len(text) for _, text in s.tap_sentences.values()) <= TAP_SENTENCES_CHARS
    assert keys[-1] in s.tap_sentences and keys[0] not in s.tap_sentences


def test_posts_answered_buttons_and_quizzes_stay_bounded() -> None:
    data = BotData()
    for n in range(MILLION):
        data.posts[(-100, n)] = (-200, n)
        data.mark_answered(str(n))
        data.quizzes[f"poll{n}"] = object()
    assert len(data.posts) <= POSTS_KEPT and len(data.answered) <= ANSWERED_KEPT
    assert len(data.quizzes) <= QUIZZES_KEPT


async def test_people_forgotten_within_the_hour_stay_bounded(tmp_path: Path) -> None:
    async def write(ops) -> None:
        return None

    writer = InteractionWriter(write)
    await writer.start()
    assert await writer.forget(1) is Forgotten.DONE  # forget() notes the person as below, then deletes
    for user_id in range(MILLION):
        writer.note_forgotten(user_id)
    await writer.close()
    assert len(writer._forgotten) <= FORGOTTEN_KEEP


@pytest.mark.parametrize("queries", [10_000])
async def test_inline_calls_in_flight_leave_when_they_end(queries: int) -> None:
    """The one map not capped by size: it holds the model calls running now, and each leaves as it ends."""
    from bot.handlers.inline import _latest_only

    s = services()

    async def answer(n: int) -> int:
        await asyncio.sleep(0)
        return n

    results = await asyncio.gather(*(_latest_only(s, user_id, answer(user_id)) for user_id in range(queries)))
    assert results == list(range(queries)) and s.inline_in_flight == {}


def test_the_application_notes_no_ids_for_a_persistence_it_does_not_have(tmp_path: Path) -> None:
    """python-telegram-bot adds every update's user and chat id to two sets for its persistence, and empties them
    only when there is one: without, they grew by every new person for the life of the process."""
    from telegram import Update

    from tests.support.bot_harness import bot_settings, built_application

    fake = SimpleNamespace(url="http://127.0.0.1:9/bot")
    application, _ = built_application(bot_settings(fake, tmp_path, tmp_path))  # type: ignore[arg-type]
    for user_id in range(1, 1_001):
        person = {"id": user_id, "is_bot": False, "first_name": "A"}
        message = {"message_id": 1, "date": 0, "chat": {**person, "type": "private"}, "from": person}
        update = Update.de_json({"update_id": user_id, "message": message}, None)
        application._mark_for_persistence_update(update=update)
    assert application._user_ids_to_be_updated_in_persistence == set()
    assert application._chat_ids_to_be_updated_in_persistence == set()


async def test_the_edits_remembered_stay_bounded_and_forget_drops_a_persons_chat() -> None:
    """bot.edits keeps a digest per edited message, capped; /forget drops those of the person's private chat, and
    no lock outlives the presses that used it."""
    edited: list[tuple[int, int]] = []

    def message(chat_id: int, message_id: int) -> SimpleNamespace:
        async def edit_text(html: str, reply_markup=None) -> None:
            edited.append((chat_id, message_id))

        return SimpleNamespace(chat_id=chat_id, message_id=message_id, edit_text=edit_text)

    edits = MessageEdits(kept=1_000)
    for n in range(5_000):
        assert await edits.edit(message(n % 50, n), "<b>top 10</b>", None)
    assert len(edits._last) <= 1_000 and len(edits._locks) == 0
    assert not await edits.edit(message(49, 4_999), "<b>top 10</b>", None), "the same content twice"
    edits.forget(49)
    assert all(chat != 49 for chat, _ in edits._last)
    assert await edits.edit(message(49, 4_999), "<b>top 10</b>", None), "forgotten: edited again"
    assert len(edited) == 5_001
