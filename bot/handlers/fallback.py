"""Private messages that are neither a sentence with a mask nor the keyword: a short, friendly hint."""

from __future__ import annotations

from telegram import Update

from bot.handlers.common import Context


async def private_fallback(update: Update, context: Context) -> None:
    s = context.bot_data.services
    message = update.effective_message
    await message.reply_html(
        s.renderer.html("fallback", non_text=not message.text, keyword=s.guides.default.keywords[0])
    )
