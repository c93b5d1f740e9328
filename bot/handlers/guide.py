"""/start (with and without a deep-link payload), /help, /guide, and the keyword in a private chat."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.helpers import create_deep_linked_url

from bot.handlers.common import (
    Context,
    answer_query,
    log_interaction,
    open_bot_keyboard,
    send_experiments,
    send_guide,
    send_guide_document,
    send_guide_page,
    send_whole_guide,
    started_at,
    switch_language_button,
    user_info,
)
from bot.storage.repository import UserStarted
from bot.storage.vocabulary import Kind
from bot.text.payloads import guide_payload, parse_payload
from bot.text.triggers import detect_trigger


async def start_with_payload(update: Update, context: Context) -> None:
    """``/start <payload>``: the user came from one of our buttons or links. Every payload the bot hands out
    means "send me the guide"; anything else (hand-crafted, too long, odd characters) gets the greeting."""
    payload = parse_payload(context.args[0] if context.args else None)
    if payload is None:
        await start(update, context)
        return
    await _started(update, context)
    # A post's payload: they commented under it and came here by its button.
    await send_guide(context, update.effective_chat.id, commented=payload.kind == "post")
    await log_interaction(update, context, Kind.GUIDE, trigger=f"start:{payload.post_key or payload.kind}")


async def start(update: Update, context: Context) -> None:
    await _started(update, context)
    text, keyboard = start_message(update, context)
    await update.effective_message.reply_html(text, reply_markup=keyboard)
    await log_interaction(update, context, Kind.START)


def start_message(update: Update, context: Context) -> tuple[str, InlineKeyboardMarkup]:
    """The greeting and its buttons (the guide, inline mode, the other language), in the person's language."""
    s = context.bot_data.services
    user = update.effective_user
    text = s.renderer.html(
        "start",
        first_name=user.first_name if user else None,
        keyword=s.settings.trigger_keywords[0],
        model_name=s.model_label,
        bot_username=context.bot.username,
    )
    keyboard = _guide_and_inline_keyboard(context)
    rows = [*keyboard.inline_keyboard, [switch_language_button(s.renderer, "start")]]
    return text, InlineKeyboardMarkup(rows)


async def help_command(update: Update, context: Context) -> None:
    s = context.bot_data.services
    await update.effective_message.reply_html(
        s.renderer.html(
            "help",
            keyword=s.settings.trigger_keywords[0],
            model_name=s.model_label,
            bot_username=context.bot.username,
            max_masks=s.settings.model_max_masks,
        ),
        reply_markup=_guide_and_inline_keyboard(context),
    )


async def guide_command(update: Update, context: Context) -> None:
    """/guide: the guide in a private chat; in a group, a button to get it privately (no wall of text)."""
    s = context.bot_data.services
    chat = update.effective_chat
    if chat.type != chat.PRIVATE:
        await update.effective_message.reply_html(
            s.renderer.html("guide_in_group"),
            reply_markup=open_bot_keyboard(context.bot.username, guide_payload(), s.renderer.text("button_get_guide")),
        )
        return
    await send_guide(context, chat.id)
    await log_interaction(update, context, Kind.GUIDE, trigger="/guide")


async def keyword_message(update: Update, context: Context) -> None:
    """The keyword ("MLM", "send me mlm please", "#MLM") in a private chat."""
    s = context.bot_data.services
    keyword = detect_trigger(update.effective_message.text, s.settings.trigger_keywords)
    await send_guide(context, update.effective_chat.id, reply_to=update.effective_message, commented=True)
    await log_interaction(update, context, Kind.GUIDE, trigger=keyword, input_text=update.effective_message.text)


async def guide_button(update: Update, context: Context) -> None:
    """The "What is MLM?" button under a prediction or the greeting. In a group (a shared inline answer), the
    whole guide would be a wall of text for everyone: the press opens the bot instead, whose /start sends it."""
    chat = update.effective_chat
    if chat is None or chat.type != chat.PRIVATE:
        await answer_query(update, context, url=create_deep_linked_url(context.bot.username, guide_payload()))
        return
    await answer_query(update, context)
    await send_guide(context, chat.id)
    await log_interaction(update, context, Kind.GUIDE, trigger="button")


async def lesson_button(update: Update, context: Context) -> None:
    """The lesson's buttons (``guide:p:<n>``, ``guide:all``, ``guide:md``, ``guide:live``). The page number is
    the client's word: one out of range (made up, or from a longer guide of an older version) is a stale button.
    Private chats only: the gate (``bot.handlers.gate``) answers a press in a group, where the lesson never is."""
    s = context.bot_data.services
    chat = update.effective_chat
    step = update.callback_query.data.removeprefix("guide:")
    number = int(step[2:]) if step.startswith("p:") else None
    if number is not None and number >= len(s.renderer.guide_messages(model_name=s.model_label)):
        await stale_button(update, context)
        return
    await answer_query(update, context)
    if number is not None:
        await send_guide_page(context, chat.id, number)
        step = f"page{number}"
    elif step == "all":
        await send_whole_guide(context, chat.id)
    elif step == "md":
        await send_guide_document(context, chat.id)
    else:
        await send_experiments(context, chat.id)
    await log_interaction(update, context, Kind.LESSON, trigger=step)


async def stale_button(update: Update, context: Context) -> None:
    """Any other button data: from an old version of the bot, or made up. Answered, so the spinner stops."""
    await answer_query(update, context, context.bot_data.services.renderer.text("button_stale"))


async def _started(update: Update, context: Context) -> None:
    """Remember that the user may be written to from now on: through the background writer, so a locked or
    slow database delays the bookkeeping, never the greeting or the guide."""
    user = user_info(update.effective_user)
    if user is not None:
        await context.bot_data.services.log(UserStarted(user, started_at(update)))


def _guide_and_inline_keyboard(context: Context) -> InlineKeyboardMarkup:
    text = context.bot_data.services.renderer.text
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(text("button_guide"), callback_data="guide")],
            [InlineKeyboardButton(text("button_try_inline"), switch_inline_query=text("inline_example"))],
        ]
    )
