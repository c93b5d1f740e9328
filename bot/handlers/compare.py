"""``/compare <sentence>`` and the "⚖️ Compare models" button under a prediction: the same sentence through each
model of ``COMPARE_MODELS`` (``bot.compare_models``), top 3 each, in one message."""

from __future__ import annotations

from telegram import Message, Update

from bot.compare_models import row_error_words
from bot.handlers.common import Context, answer_query, log_interaction, visible_message
from bot.handlers.predict import after_command, sentence_under
from bot.storage.vocabulary import Kind
from models.engine.errors import FillMaskError


async def compare_command(update: Update, context: Context) -> None:
    s = context.bot_data.services
    message = update.effective_message
    sentence = after_command(message)
    if not sentence or not s.has_mask(sentence):
        await message.reply_html(s.renderer.html("compare_usage"))
        return
    await _compare(update, context, sentence, message)


async def compare_button(update: Update, context: Context) -> None:
    shown = visible_message(update)
    sentence = await sentence_under(update, context, shown)
    if sentence is None:
        return
    await _compare(update, context, sentence, shown)


async def _compare(update: Update, context: Context, sentence: str, under: Message) -> None:
    s = context.bot_data.services
    query = update.callback_query
    with s.predict_limit.enter(update.effective_user.id) as refusal:
        if refusal is not None:
            text = s.renderer.error(refusal.code, {"retry_after": refusal.retry_after}, plain=query is not None)
            if query is not None:
                await query.answer(text, show_alert=True)
            else:
                await under.reply_html(text)
            return
        if query is not None:
            await answer_query(update, context)  # at once: loading the models the first time takes a while
        compared = s.compared_models()
        if not compared.loaded:
            await under.reply_html(s.renderer.html("compare_loading", count=len(compared.names)))
        try:
            rows = await compared.compare(sentence)
        except FillMaskError as exc:
            await under.reply_html(s.renderer.error(exc.code, exc.details))
            return
    errors = [row_error_words(s.renderer, row) for row in rows]
    html = s.renderer.html(
        "compare", sentence=sentence, rows=rows, errors=errors, mask_spelling=s.mask_spelling(sentence)
    )
    await under.reply_html(html)
    await log_interaction(
        update, context, Kind.COMPARE, input_text=sentence,
        predictions=[{"model": row.label, "masks": row.masks, "error": row.error} for row in rows],
    )  # fmt: skip
