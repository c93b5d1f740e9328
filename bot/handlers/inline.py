"""Inline mode: ``@bot a sentence with [MASK]`` anywhere, and ``@bot mlm`` (any guide's keyword) to share that
guide."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Coroutine
from typing import Any

from telegram import InlineQueryResultArticle, InlineQueryResultsButton, InputTextMessageContent, Update

from bot.answers import Answer, answer_html, ask
from bot.guides import Guide
from bot.handlers.common import Context, log_interaction, open_bot_keyboard
from bot.services import BotServices
from bot.storage.vocabulary import Kind, Outcome
from bot.text.payloads import guide_payload
from bot.text.render import percent
from models.engine.errors import FillMaskError

CACHE_SECONDS = 300  # the same sentence gives the same answer: let Telegram cache it
# Telegram drops inline answers after about 10 s, and people type on: an answer later than this is of no use.
INLINE_DEADLINE_S = 5.0


async def inline_query(update: Update, context: Context) -> None:
    s = context.bot_data.services
    query = update.inline_query
    text = query.query.strip()
    button = InlineQueryResultsButton(text=s.renderer.text("inline_button"), start_parameter="inline")
    if not s.has_mask(text):
        found = s.guides.detect(text)
        results = [_guide_result(s, context.bot.username, found[0])] if found else []
        await query.answer(results, button=button, cache_time=CACHE_SECONDS)
        return

    user_id = update.effective_user.id
    refusal = s.inline_limit.check(user_id)
    if refusal is not None:
        await query.answer([], button=_refusal(s, refusal.code, {"retry_after": refusal.retry_after}), cache_time=0)
        return
    started = time.perf_counter()
    try:
        answer = await _latest_only(s, user_id, ask(s, text, 5))
        if answer is None:
            return  # the user typed on: a newer query replaces this one, which gets no answer
    except asyncio.TimeoutError:
        await query.answer([], button=_refusal(s, "timeout"), cache_time=0)
        await log_interaction(update, context, Kind.INLINE, input_text=text, outcome=Outcome.TIMEOUT)
        return
    except FillMaskError as exc:
        await query.answer([], button=_refusal(s, exc.code, exc.details), cache_time=0)
        await log_interaction(update, context, Kind.INLINE, input_text=text, outcome=exc.code)
        return

    keyboard = open_bot_keyboard(context.bot.username, guide_payload(), s.renderer.text("button_open_bot"))
    words = answer.words
    results = [
        InlineQueryResultArticle(
            id=_result_id("all", text),
            title=s.renderer.text("inline_all_title", model_name=s.model_label),
            description=s.renderer.text("inline_all_description", words=", ".join(w["word"] for w in words[0])),
            input_message_content=InputTextMessageContent(answer_html(s, answer)),
            reply_markup=keyboard,
        )
    ]
    if len(words) == 1:
        for rank, (p, word) in enumerate(zip(answer.result.masks[0], (w["word"] for w in words[0]), strict=True)):
            results.append(
                InlineQueryResultArticle(
                    id=_result_id(str(rank), text),
                    title=s.renderer.text("inline_candidate_title", word=word, percent=percent(p.score)),
                    description=p.sequence[:200],
                    input_message_content=InputTextMessageContent(
                        s.renderer.html(
                            "inline_prediction", sentence=p.sequence, word=word, score=p.score, model_name=s.model_label
                        )
                    ),
                    reply_markup=keyboard,
                )
            )
    await query.answer(results, button=button, cache_time=CACHE_SECONDS)
    await log_interaction(
        update,
        context,
        Kind.INLINE,
        input_text=text,
        model_name=s.model.model_name,
        predictions=answer.for_log(),
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def _guide_result(s: BotServices, bot_username: str, guide: Guide) -> InlineQueryResultArticle:
    """The guide as a message to share: its title and description, and a button that opens it in the bot."""
    language = s.renderer.language()
    title, description = guide.title_in(language), guide.description_in(language)
    message = s.renderer.html("inline_guide", bot_username=bot_username, title=title, description=description)
    return InlineQueryResultArticle(
        id=f"guide-{guide.slug}",
        title=s.renderer.text("inline_guide_title", title=title)[:256],
        description=description[:256],
        input_message_content=InputTextMessageContent(message),
        reply_markup=open_bot_keyboard(
            bot_username,
            guide_payload(None if guide is s.guides.default else guide.slug),
            s.renderer.text("button_get_guide", name=guide.name_in(language)),
        ),
    )


async def _latest_only(s: BotServices, user_id: int, work: Coroutine[Any, Any, Answer]) -> Answer | None:
    """Run the model call for this user's newest inline query only: people type letter by letter, and each
    letter is a new query, so a newer one cancels the call of the older one still in flight (None here).
    Bounded by INLINE_DEADLINE_S (asyncio.TimeoutError past it)."""
    task = asyncio.ensure_future(work)
    previous = s.inline_in_flight.get(user_id)
    if previous is not None and not previous.done():
        previous.cancel()
    s.inline_in_flight[user_id] = task
    try:
        return await asyncio.wait_for(asyncio.shield(task), INLINE_DEADLINE_S)
    except asyncio.CancelledError:
        if task.cancelled() and s.inline_in_flight.get(user_id) is not task:
            return None  # superseded by a newer query
        task.cancel()  # this handler itself is being cancelled (the bot stops)
        raise
    except asyncio.TimeoutError:
        task.cancel()
        raise
    finally:
        if s.inline_in_flight.get(user_id) is task:
            del s.inline_in_flight[user_id]
        with contextlib.suppress(BaseException):
            if task.done() and not task.cancelled():
                task.exception()  # retrieved, so an abandoned failure is not reported as never retrieved


def _refusal(s: BotServices, code: str, details: dict[str, object] | None = None) -> InlineQueryResultsButton:
    """A refusal as the button above the (empty) results: nothing the user could send into a chat."""
    return InlineQueryResultsButton(text=s.renderer.inline_refusal(code, details), start_parameter="inline")


def _result_id(kind: str, text: str) -> str:
    return f"{kind}-{hashlib.sha1(text.encode()).hexdigest()[:20]}"  # at most 64 bytes, stable per sentence
