"""/language (English or Hinglish) and the language buttons: under the chooser, the greeting and the guide.

``/language`` alone shows both languages as buttons; ``/language hinglish`` (or ``english``) switches at once.
A choice is remembered per person (``bot.chosen_languages``) and written to the database through the background
writer. The buttons' data, pattern and parser: ``bot.handlers.language_buttons``.
"""

from __future__ import annotations

from telegram import Update

from bot.chosen_languages import parse_language
from bot.handlers.common import (
    Context,
    answer_query,
    log_interaction,
    started_at,
    user_info,
    visible_message,
)
from bot.handlers.guide import start_message
from bot.handlers.language_buttons import chooser_keyboard, parse
from bot.handlers.lesson import guide_of, send_guide
from bot.storage.vocabulary import Kind
from bot.storage.writes import LanguageChosen
from bot.text.render import REPLY_LANGUAGE
from bot.text.telegram_html import visible_text


async def language_command(update: Update, context: Context) -> None:
    """``/language``: the chooser; ``/language hinglish``: switch now; anything else: the chooser, saying so."""
    s = context.bot_data.services
    asked = " ".join(context.args or ())
    language = parse_language(context.args[0]) if context.args else None  # "/language hinglish please" too
    if language is None:
        current = s.renderer.text("language_name", name=s.renderer.language())
        text = s.renderer.html("language_choose", unknown=asked or None, current=current)
        await update.effective_message.reply_html(text, reply_markup=chooser_keyboard(s.renderer))
        return
    await _choose(update, context, language)
    await update.effective_message.reply_html(_confirmation(context))


async def language_button(update: Update, context: Context) -> None:
    s = context.bot_data.services
    press = parse(update.callback_query.data)
    if press is None:  # only matching presses come here (app.py registers the PATTERN)
        await answer_query(update, context)
        return
    language, place = press.language, press.place
    changed = await _choose(update, context, language)
    message = visible_message(update)
    if place == "guide":
        # The guide again, in the language just chosen (not twice for a double tap).
        await answer_query(update, context, s.renderer.text("language_changed", name=language))
        guide = guide_of(context, press.slug) or s.guides.default
        if changed and update.effective_chat is not None:
            outcome = await send_guide(context, update.effective_chat.id, guide)
            await log_interaction(update, context, Kind.GUIDE, trigger="language", guide=guide.slug, outcome=outcome)
        return
    await answer_query(update, context)
    if place == "start":
        text, keyboard = start_message(update, context)
    else:
        text, keyboard = _confirmation(context), None
    if message is None:  # too old for the bot to see or edit: say it in a new message
        await context.bot.send_message(update.effective_user.id, text, reply_markup=keyboard)
        return
    if message.text == visible_text(text) and message.reply_markup == keyboard:
        return  # pressed twice: Telegram would refuse the same text again ("message is not modified")
    await s.edits.edit(message, text, keyboard)  # a second press before the first one's edit: nothing again


async def _choose(update: Update, context: Context, language: str) -> bool:
    """Remember the choice (memory now, the database through the writer) and speak it from here on. True if it
    changed the language this person reads."""
    s = context.bot_data.services
    user = update.effective_user
    before = s.renderer.language()
    REPLY_LANGUAGE.set(language)
    if user is None:
        return before != language
    s.languages.remember(user.id, language)
    await s.log(LanguageChosen(user_info(user), language, started_at(update)))
    await log_interaction(update, context, Kind.LANGUAGE, trigger=language)
    return before != language


def _confirmation(context: Context) -> str:
    s = context.bot_data.services
    return s.renderer.html("language_set", keyword=s.guides.default.keywords[0])


async def use_persons_language(update: object, context: Context) -> None:
    """First thing for every update: what the bot says while handling it is in the person's language."""
    if not isinstance(update, Update):
        return
    user = update.effective_user
    REPLY_LANGUAGE.set(await context.bot_data.services.languages.of(user.id if user else None))
