"""Pieces several handlers share: who the user is, what is logged, and the keyboards more than one flow shows
(the lesson itself is ``bot.handlers.lesson``)."""

from __future__ import annotations

import logging
from datetime import datetime

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update, User, WebAppInfo
from telegram.helpers import create_deep_linked_url

from bot.context import Context
from bot.logs import update_began_at
from bot.storage.writes import InteractionEntry, UserInfo
from bot.text.render import Renderer

log = logging.getLogger(__name__)


def user_info(user: User | None) -> UserInfo | None:
    if user is None:
        return None
    return UserInfo(id=user.id, username=user.username, language=user.language_code)


def started_at(update: Update) -> datetime:
    """When the user did it: the message's date, else when the bot began handling it (callback and inline
    queries carry no date). /forget drops the writes that started before it, also those a handler still running
    (a chart, a comparison) hands over afterwards: so never "now" at the end of a long handler."""
    message = update.effective_message
    if message is not None and message.date is not None and update.callback_query is None:
        return message.date
    return update_began_at()


def entry(update: Update, kind: str, **fields: object) -> InteractionEntry:
    """An interaction row for this update: who, where, what, when."""
    chat = update.effective_chat
    fields.setdefault("created_at", started_at(update))
    return InteractionEntry(
        kind=kind,
        user=user_info(update.effective_user),
        chat_id=chat.id if chat else None,
        chat_type=str(chat.type) if chat else None,
        **fields,  # type: ignore[arg-type]
    )


def open_bot_keyboard(bot_username: str, payload: str, label: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, url=create_deep_linked_url(bot_username, payload))]])


def playground_button(renderer: Renderer, mini_app_url: str) -> InlineKeyboardButton:
    """Opens the playground Mini App (private chats only: Telegram refuses Mini App buttons in groups), with the
    page's words in the person's language."""
    return InlineKeyboardButton(
        renderer.text("button_playground"), web_app=WebAppInfo(f"{mini_app_url}?lang={renderer.language()}")
    )


def visible_message(update: Update) -> Message | None:
    """The message a button is under, if the bot can still see it: Telegram sends an "inaccessible" stand-in
    (date 0) for old ones, which cannot be edited or read."""
    message = update.callback_query.message if update.callback_query else None
    return message if isinstance(message, Message) and message.is_accessible else None


async def answer_query(
    update: Update, context: Context, text: str | None = None, *, show_alert: bool = False, url: str | None = None
) -> None:
    """Answer the button press, once: Telegram shows a spinner until then, and the error handler answers only
    the presses that were not answered here."""
    query = update.callback_query
    context.bot_data.mark_answered(query.id)
    await query.answer(text, show_alert=show_alert, url=url)


async def log_interaction(update: Update, context: Context, kind: str, **fields: object) -> None:
    await context.bot_data.services.log(entry(update, kind, **fields))
