"""Live predictions: a private message with a mask, /predict, and the buttons under an answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, MessageEntity, Update
from telegram.constants import ChatAction
from telegram.error import TelegramError

from bot.answers import Answer, answer_html, ask
from bot.handlers import lesson
from bot.handlers.common import Context, answer_query, log_interaction, playground_button, visible_message
from bot.services import BotServices
from bot.storage.vocabulary import Kind
from bot.text.charts import prediction_chart
from bot.text.render import shorten
from bot.text.telegram_html import visible_text
from models.engine.errors import FillMaskError

log = logging.getLogger(__name__)

# The answer's buttons (built in _keyboard, read by _experiment_of): ":x<n>" says which ready sentence it answers.
MORE_PATTERN = r"\Amore(:x\d+)?\Z"
FEWER_PATTERN = r"\Afewer(:x\d+)?\Z"
CHART_PATTERN = r"\Achart(:x\d+)?\Z"
COMPARE_PATTERN = r"\Acompare(:x\d+)?\Z"  # answered by the compare flow (bot.handlers.compare)

TOP_K = 5
MORE_K = 15


async def predict_message(update: Update, context: Context) -> None:
    """A private message that contains a mask."""
    await _predict(update, context, update.effective_message.text or "")


async def predict_command(update: Update, context: Context) -> None:
    """``/predict <sentence>``; the sentence keeps its own spacing and line breaks."""
    sentence = after_command(update.effective_message)
    if not sentence:
        await update.effective_message.reply_html(context.bot_data.services.renderer.html("predict_usage"))
        return
    await _predict(update, context, sentence)


async def more_button(update: Update, context: Context) -> None:
    await _expand(update, context, MORE_K)


async def fewer_button(update: Update, context: Context) -> None:
    await _expand(update, context, TOP_K)


async def experiment_button(update: Update, context: Context) -> None:
    """``try:<n>``: the model's guesses for one of the ready sentences (under Try it live), and
    ``try:<slug>:<page>.<k>``: for a "Guess, then tap" sentence under a guide's page; as a new answer under them.
    A ready sentence's answer buttons carry its number (there is no message of the person's to read it from);
    a page's sentence is found again through the logged answer."""
    s = context.bot_data.services
    query = update.callback_query
    shown = visible_message(update)
    experiments = s.renderer.experiments()
    _, _, rest = query.data.partition(":")
    number = lesson.ready_number(query.data)
    if number is not None:
        sentence = experiments[number][1] if number < len(experiments) else None
    else:
        sentence = lesson.prompt_sentence(s.guides, query.data, s.renderer.language(), s.model_label)
        number = next((n for n, (_, ready) in enumerate(experiments) if ready == sentence), None)
    if shown is None or sentence is None:
        await answer_query(update, context)
        await context.bot.send_message(update.effective_chat.id, s.renderer.html("expired"))
        return
    answer = await ask_for_button(update, context, sentence, TOP_K, shown)
    if answer is None:
        return
    html = answer_html(s, answer)
    if number is not None and number in s.renderer.bias_experiments():  # the bias pair: why it matters
        html += "\n\n" + s.renderer.html("bias_note")
    sent = await shown.reply_html(html, reply_markup=_keyboard(s, more=True, experiment=number))
    await log_interaction(
        update, context, Kind.PREDICTION, trigger=f"try{number if number is not None else ':' + rest}",
        input_text=sentence, model_name=s.model.model_name,
        predictions=answer.for_log(), answer_message_id=sent.message_id,
    )  # fmt: skip


async def _predict(update: Update, context: Context, sentence: str) -> None:
    s = context.bot_data.services
    message = update.effective_message
    with s.predict_limit.enter(update.effective_user.id) as refusal:
        if refusal is not None:
            await message.reply_html(s.renderer.error(refusal.code, {"retry_after": refusal.retry_after}))
            await log_interaction(update, context, Kind.PREDICTION, input_text=sentence, outcome=refusal.code)
            return
        limiter = context.bot.rate_limiter
        bursting = s.prediction_starts.bursting()
        if not bursting and not getattr(limiter, "busy", False):  # in a burst the reply is better than "typing..."
            with contextlib.suppress(TelegramError):  # a courtesy, never a reason to fail
                await context.bot.send_chat_action(message.chat_id, ChatAction.TYPING)
        started = time.perf_counter()
        try:
            answer = await ask(s, sentence, TOP_K)
        except FillMaskError as exc:
            await message.reply_html(s.renderer.error(exc.code, exc.details))
            await log_interaction(
                update, context, Kind.PREDICTION, input_text=sentence, model_name=s.model.model_name, outcome=exc.code
            )
            return
        latency_ms = (time.perf_counter() - started) * 1000
    sent = await message.reply_html(answer_html(s, answer), reply_markup=_keyboard(s, more=True))
    await log_interaction(
        update,
        context,
        Kind.PREDICTION,
        input_text=sentence,
        model_name=s.model.model_name,
        predictions=answer.for_log(),
        latency_ms=latency_ms,
        answer_message_id=sent.message_id,  # the answer's buttons find the sentence by it
    )


async def _expand(update: Update, context: Context, top_k: int) -> None:
    """Show more (or fewer) candidates for the sentence an answer belongs to, by editing that answer. The
    sentence is read back from the user's message the answer replies to, so buttons survive restarts."""
    s = context.bot_data.services
    query = update.callback_query
    shown = visible_message(update)
    sentence = await sentence_under(update, context, shown)
    if sentence is None:
        return
    answer = await ask_for_button(update, context, sentence, top_k, shown)
    if answer is None:
        return
    number = _experiment_of(query.data)
    html, keyboard = answer_html(s, answer), _keyboard(s, more=top_k == TOP_K, experiment=number)
    if shown.text == visible_text(html) and shown.reply_markup == keyboard:
        return  # pressed twice: Telegram would refuse the same text again ("message is not modified")
    if not await s.edits.edit(shown, html, keyboard):
        return  # pressed again before the first press's edit went out: it is there already
    await log_interaction(update, context, Kind.PREDICTION, trigger=f"top{top_k}", input_text=sentence)


async def chart_button(update: Update, context: Context) -> None:
    """The answer's candidates as a picture: bars on one 0-100% scale (drawn in a thread), sent under it."""
    s = context.bot_data.services
    shown = visible_message(update)
    sentence = await sentence_under(update, context, shown)
    if sentence is None:
        return
    answer = await ask_for_button(update, context, sentence, TOP_K, shown)
    if answer is None:
        return
    text = s.renderer.text
    png = await asyncio.to_thread(
        prediction_chart,
        answer.words,
        title=text("prediction_chart_title", model_name=s.model_label, sentence=shorten(sentence, 70)),
        mask_label=text("prediction_chart_mask"),
        axis_label=text("prediction_chart_axis"),
    )
    caption = s.renderer.html(
        "prediction_chart", model_name=s.model_label, sentence=sentence, mask_spelling=s.mask_spelling(sentence)
    )
    await shown.reply_photo(InputFile(png, filename="predictions.png"), caption=caption)
    await log_interaction(update, context, Kind.CHART, input_text=sentence, model_name=s.model.model_name)


async def ask_for_button(update: Update, context: Context, sentence: str, top_k: int, shown: Message) -> Answer | None:
    """A button's model call. Over the person's limit: an alert on the button, and None. Otherwise the press is
    answered at once (Telegram shows a spinner until then and drops answers after about 15 s, and the model may
    take longer: a busy worker), then the model runs; its error goes under ``shown``, and None comes back."""
    s = context.bot_data.services
    with s.predict_limit.enter(update.effective_user.id) as refusal:
        if refusal is not None:
            text = s.renderer.error(refusal.code, {"retry_after": refusal.retry_after}, plain=True)
            await update.callback_query.answer(text, show_alert=True)
            return None
        await answer_query(update, context)
        try:
            return await ask(s, sentence, top_k)
        except FillMaskError as exc:
            await shown.reply_html(s.renderer.error(exc.code, exc.details))
            return None


async def sentence_under(update: Update, context: Context, shown: Message | None) -> str | None:
    """The sentence an answer belongs to: a ready sentence's when the button carries its number (``more:x1``),
    else the one logged with this answer's own chat and message id (so buttons survive restarts, work from
    another replica, and need nothing Telegram may leave out of the press), else read back from the person's
    message the answer replies to (an answer the log does not know yet, or any more); None, after saying so,
    when it is gone or has no mask any more."""
    s = context.bot_data.services
    number = _experiment_of(update.callback_query.data)
    if number is not None:
        experiments = s.renderer.experiments()
        sentence = experiments[number][1] if number < len(experiments) else None
    else:
        sentence = await _logged_sentence(s, shown)
        original = shown.reply_to_message if shown else None
        command = original and original.text and original.text.startswith("/")
        sentence = sentence or (after_command(original) if command else None)
        sentence = sentence or (original.text if original else None)
    if shown is None or not sentence or not s.has_mask(sentence):
        await answer_query(update, context)
        await context.bot.send_message(update.effective_chat.id, s.renderer.html("expired"))
        return None
    return sentence


async def _logged_sentence(s: BotServices, shown: Message | None) -> str | None:
    if shown is None:
        return None
    try:
        return await asyncio.wait_for(s.repo.interactions.sentence_of_answer(shown.chat_id, shown.message_id), 2.0)
    except Exception as exc:  # slow or away: what Telegram sent with the press may still tell
        log.warning("could not look up an answer's sentence now (%s)", type(exc).__name__)
        return None


def _experiment_of(data: str | None) -> int | None:
    """The ready sentence a button's answer is for (``more:x1`` -> 1), or None."""
    _, _, number = (data or "").partition(":x")
    return int(number) if number.isdigit() else None


def _keyboard(s: BotServices, *, more: bool, experiment: int | None = None) -> InlineKeyboardMarkup:
    suffix = f":x{experiment}" if experiment is not None else ""
    toggle = (
        InlineKeyboardButton(s.renderer.text("button_more"), callback_data="more" + suffix)
        if more
        else InlineKeyboardButton(s.renderer.text("button_fewer"), callback_data="fewer" + suffix)
    )
    chart = InlineKeyboardButton(s.renderer.text("button_chart"), callback_data="chart" + suffix)
    compare = InlineKeyboardButton(s.renderer.text("button_compare"), callback_data="compare" + suffix)
    guide = InlineKeyboardButton(s.renderer.text("button_guide"), callback_data=lesson.start_data())
    rows = [[toggle, chart], [compare, guide]]
    if s.settings.mini_app_url:  # predictions are answered in private chats, where Mini App buttons work
        rows.append([playground_button(s.renderer, s.settings.mini_app_url)])
    return InlineKeyboardMarkup(rows)


def after_command(message: Message | None) -> str:
    """The text after a leading /command (and @botname)."""
    if message is None or not message.text:
        return ""
    for entity in message.entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            return message.text[entity.length :].strip()
    return message.text.strip()
