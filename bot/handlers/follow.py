"""Follow-ups people asked for: "🔔 Tell me when there's a new guide" under a guide's last page and the greeting,
/subscribe and /unsubscribe. Only people who asked are ever messaged unprompted (``mlm-bot broadcast``, sent by
``bot.broadcaster``); a broadcast Telegram refuses with 403 unsubscribes them, and /forget removes it all.

Button data ``sub:on`` / ``sub:off``; a press turns that button into the other one in place. The choice goes
through the background writer (a slow database never holds the answer up) and, like every write of a person's,
is dropped if they /forget before it is written.
"""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest

from bot.context import Context
from bot.handlers.common import answer_query, log_interaction, started_at, user_info, visible_message
from bot.storage.vocabulary import Kind
from bot.storage.writes import SubscriptionChanged, UserStarted
from bot.text.render import Renderer

PATTERN = r"\Asub:(on|off)\Z"


def subscribe_button(renderer: Renderer, subscribed: bool = False) -> InlineKeyboardButton:
    if subscribed:
        return InlineKeyboardButton(renderer.text("button_unsubscribe"), callback_data="sub:off")
    return InlineKeyboardButton(renderer.text("button_subscribe"), callback_data="sub:on")


async def _change(update: Update, context: Context, subscribed: bool) -> None:
    user = user_info(update.effective_user)
    if user is None:
        return
    s = context.bot_data.services
    when = started_at(update)
    await s.log(UserStarted(user, when))  # they write to the bot in private: it may write to them
    await s.log(SubscriptionChanged(user, subscribed, when))
    await log_interaction(update, context, Kind.FOLLOW, trigger="on" if subscribed else "off")


async def subscribe_command(update: Update, context: Context) -> None:
    await _change(update, context, True)
    await update.effective_message.reply_html(context.bot_data.services.renderer.html("subscribed"))


async def unsubscribe_command(update: Update, context: Context) -> None:
    await _change(update, context, False)
    await update.effective_message.reply_html(context.bot_data.services.renderer.html("unsubscribed"))


async def subscribe_button_pressed(update: Update, context: Context) -> None:
    """``sub:on`` / ``sub:off``: answered at once, the choice kept, the button turned into the other one."""
    s = context.bot_data.services
    on = update.callback_query.data == "sub:on"
    await answer_query(update, context, s.renderer.text("answer_subscribed" if on else "answer_unsubscribed"))
    await _change(update, context, on)
    shown = visible_message(update)
    if shown is None or shown.reply_markup is None:
        return
    rows = [
        [subscribe_button(s.renderer, on) if b.callback_data in ("sub:on", "sub:off") else b for b in row]
        for row in shown.reply_markup.inline_keyboard
    ]
    try:
        await shown.edit_reply_markup(InlineKeyboardMarkup(rows))
    except BadRequest:  # a double tap: "message is not modified"
        pass
