"""/stats for the bot's admins: the numbers as a message, the daily counts as a chart."""

from __future__ import annotations

import asyncio

from telegram import InputFile, Update

from bot.analytics import gather_stats, render_chart
from bot.handlers.common import Context

STATS_DAYS = 7


async def stats_command(update: Update, context: Context) -> None:
    s = context.bot_data.services
    message = update.effective_message
    if update.effective_user is None or update.effective_user.id not in s.settings.admin_user_ids:
        await message.reply_html(s.renderer.html("stats_refused"))
        return
    await s.writer.flush()  # count what was just logged too
    stats = await gather_stats(s.repo, days=STATS_DAYS)
    await message.reply_html(s.renderer.html("stats", s=stats))
    chart = await asyncio.to_thread(render_chart, stats, s.renderer.text("chart_title", days=STATS_DAYS))
    await context.bot.send_photo(
        update.effective_chat.id,
        InputFile(chart, filename="mlm-bot-stats.png"),
        caption=s.renderer.html("stats_chart", days=STATS_DAYS),
    )
