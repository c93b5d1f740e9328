"""Inline mode: ``@bot a sentence with [MASK]`` anywhere, and ``@bot mlm`` to share the guide."""

from __future__ import annotations

import hashlib
import time

from telegram import InlineQueryResultArticle, InlineQueryResultsButton, InputTextMessageContent, Update

from bot.handlers.common import Context, log_interaction, open_bot_keyboard
from bot.payloads import guide_payload
from bot.predictions import answer_html, ask
from bot.render import percent
from bot.services import BotServices, services
from bot.telegram_html import visible_text
from bot.triggers import detect_trigger
from models.errors import FillMaskError

CACHE_SECONDS = 300  # the same sentence gives the same answer: let Telegram cache it


async def inline_query(update: Update, context: Context) -> None:
    s = services(context)
    query = update.inline_query
    text = query.query.strip()
    button = InlineQueryResultsButton(text=s.renderer.text("inline_button"), start_parameter="inline")
    if not s.has_mask(text):
        results = [_guide_result(s, context.bot.username)] if detect_trigger(text, s.settings.trigger_keywords) else []
        await query.answer(results, button=button, cache_time=CACHE_SECONDS)
        return

    refusal = s.inline_gate.check(update.effective_user.id)
    if refusal is not None:
        await query.answer([_problem(s, refusal.code, retry_after=refusal.retry_after)], button=button, cache_time=0)
        return
    started = time.perf_counter()
    try:
        answer = await ask(s, text, 5)
    except FillMaskError as exc:
        await query.answer([_problem(s, exc.code, **exc.details)], button=button, cache_time=0)
        await log_interaction(update, context, "inline", input_text=text, outcome=exc.code)
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
        "inline",
        input_text=text,
        model_name=s.model.model_name,
        predictions=answer.for_log(),
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def _guide_result(s: BotServices, bot_username: str) -> InlineQueryResultArticle:
    return InlineQueryResultArticle(
        id="guide",
        title=s.renderer.text("inline_guide_title"),
        description=s.renderer.text("inline_guide_description"),
        input_message_content=InputTextMessageContent(s.renderer.html("inline_guide", bot_username=bot_username)),
        reply_markup=open_bot_keyboard(bot_username, guide_payload(), s.renderer.text("button_get_guide")),
    )


def _problem(s: BotServices, code: str, **details: object) -> InlineQueryResultArticle:
    html = s.renderer.html(
        "error",
        code=code,
        count=details.get("count"),
        limit=details.get("limit"),
        retry_after=details.get("retry_after", 0),
    )
    return InlineQueryResultArticle(
        id=f"problem-{code}"[:64],
        title=s.renderer.text("inline_problem_title"),
        description=visible_text(html)[:200],
        input_message_content=InputTextMessageContent(html),
    )


def _result_id(kind: str, text: str) -> str:
    return f"{kind}-{hashlib.sha1(text.encode()).hexdigest()[:20]}"  # at most 64 bytes, stable per sentence
