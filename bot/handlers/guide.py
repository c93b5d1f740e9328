"""/start (with and without a deep-link payload), /help, /guide, and a guide's keyword in a private chat."""

from __future__ import annotations

import asyncio

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from bot.handlers.common import (
    Context,
    log_interaction,
    open_bot_keyboard,
    started_at,
    user_info,
)
from bot.handlers.follow import subscribe_button
from bot.handlers.language_buttons import switch_language_button
from bot.handlers.lesson import guides_keyboard, send_guide, start_data
from bot.storage.vocabulary import Kind
from bot.storage.writes import UserStarted
from bot.text.payloads import guide_payload, parse_payload


async def start_with_payload(update: Update, context: Context) -> None:
    """``/start <payload>``: the user came from one of our buttons or links. Every payload the bot hands out
    means "send me the guide"; anything else (hand-crafted, too long, odd characters) gets the greeting."""
    payload = parse_payload(context.args[0] if context.args else None)
    if payload is None:
        await start(update, context)
        return
    await _started(update, context)
    s = context.bot_data.services
    # A guide removed since the link was handed out: the default one.
    guide = s.guides.get(payload.guide) or s.guides.default
    # A post's payload: they commented under it (its keyword) and came here by its button.
    keyword = guide.keywords[0] if payload.kind == "post" else None
    outcome = await send_guide(context, update.effective_chat.id, guide, keyword=keyword)
    await log_interaction(
        update, context, Kind.GUIDE, trigger=f"start:{payload.post_key or payload.kind}", guide=guide.slug,
        post=payload.post_key, outcome=outcome,
    )  # fmt: skip


async def start(update: Update, context: Context) -> None:
    await _started(update, context)
    text, keyboard = start_message(update, context, subscribed=await _subscribed(context, update.effective_user.id))
    await update.effective_message.reply_html(text, reply_markup=keyboard)
    await log_interaction(update, context, Kind.START)


async def _subscribed(context: Context, user_id: int) -> bool:
    """Whether they asked for new-guide messages; False if the database is slow (the greeting never waits)."""
    try:
        return await asyncio.wait_for(context.bot_data.services.repo.broadcasts.is_subscribed(user_id), 1.0)
    except Exception:
        return False


def start_message(update: Update, context: Context, *, subscribed: bool = False) -> tuple[str, InlineKeyboardMarkup]:
    """The greeting and its buttons (the guide, inline mode, new-guide messages, the other language), in the
    person's language."""
    s = context.bot_data.services
    user = update.effective_user
    text = s.renderer.html(
        "start",
        first_name=user.first_name if user else None,
        keyword=s.guides.default.keywords[0],
        model_name=s.model_label,
        bot_username=context.bot.username,
    )
    keyboard = _guide_and_inline_keyboard(context)
    rows = [
        *keyboard.inline_keyboard,
        [subscribe_button(s.renderer, subscribed)],
        [switch_language_button(s.renderer, "start")],
    ]
    return text, InlineKeyboardMarkup(rows)


async def help_command(update: Update, context: Context) -> None:
    s = context.bot_data.services
    await update.effective_message.reply_html(
        s.renderer.html(
            "help",
            keyword=s.guides.default.keywords[0],
            model_name=s.model_label,
            bot_username=context.bot.username,
            max_masks=s.settings.model_max_masks,
        ),
        reply_markup=_guide_and_inline_keyboard(context),
    )


async def guide_command(update: Update, context: Context) -> None:
    """/guide: in a private chat the guide, or with several guides a button for each (the default first); in a
    group, a button to get it privately (no wall of text)."""
    s = context.bot_data.services
    chat = update.effective_chat
    if chat.type != chat.PRIVATE:
        await update.effective_message.reply_html(
            s.renderer.html("guide_in_group"),
            reply_markup=open_bot_keyboard(
                context.bot.username, guide_payload(), s.renderer.text("button_get_guide", name=s.guides.default.name)
            ),
        )
        return
    if len(s.guides.guides) > 1:
        await update.effective_message.reply_html(s.renderer.html("guide_list"), reply_markup=guides_keyboard(context))
        await log_interaction(update, context, Kind.GUIDE, trigger="/guide:list")
        return
    outcome = await send_guide(context, chat.id)
    await log_interaction(update, context, Kind.GUIDE, trigger="/guide", guide=s.guides.default.slug, outcome=outcome)


async def keyword_message(update: Update, context: Context) -> None:
    """A guide's keyword ("MLM", "send me mlm please", "#MLM") in a private chat: that guide."""
    s = context.bot_data.services
    found = s.guides.detect(update.effective_message.text)
    if found is None:  # the guides were reloaded between the filter and here
        return
    guide, keyword = found
    chat_id, text = update.effective_chat.id, update.effective_message.text
    outcome = await send_guide(context, chat_id, guide, reply_to=update.effective_message, keyword=keyword)
    await log_interaction(
        update, context, Kind.GUIDE, trigger=keyword, input_text=text, guide=guide.slug, outcome=outcome
    )


async def _started(update: Update, context: Context) -> None:
    """Remember that the user may be written to from now on: through the background writer, so a locked or
    slow database delays the bookkeeping, never the greeting or the guide."""
    user = user_info(update.effective_user)
    if user is not None:
        await context.bot_data.services.log(UserStarted(user, started_at(update)))


def _guide_and_inline_keyboard(context: Context) -> InlineKeyboardMarkup:
    s = context.bot_data.services
    text = s.renderer.text
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(text("button_guide"), callback_data=start_data())],
            [InlineKeyboardButton(text("button_try_inline"), switch_inline_query=text("inline_example"))],
        ]
    )
