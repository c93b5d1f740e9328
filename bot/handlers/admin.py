"""For the bot's admins: /stats (the numbers as a message, the daily counts as a chart) and /reload (the guides
read again from disk, as SIGHUP does)."""

from __future__ import annotations

import asyncio
import contextlib

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Update
from telegram.error import TelegramError

from bot.analytics import gather_funnel, gather_stats, render_chart, render_funnel_chart
from bot.guides import GuideProblems
from bot.handlers.common import Context, answer_query, log_interaction, visible_message
from bot.storage.vocabulary import Kind

STATS_DAYS = 7
STATS_POSTS = 5  # the newest posts' funnels under /stats (mlm-bot stats --by-post shows more)


def is_admin(update: Update, context: Context) -> bool:
    """One of ADMIN_USER_IDS (the commands here are refused to everyone else, politely)."""
    user = update.effective_user
    return user is not None and user.id in context.bot_data.services.settings.admin_user_ids


async def stats_command(update: Update, context: Context) -> None:
    s = context.bot_data.services
    message = update.effective_message
    if not is_admin(update, context):
        await message.reply_html(s.renderer.html("stats_refused"))
        return
    await s.writer.flush()  # count what was just logged too
    stats = await gather_stats(s.repo, days=STATS_DAYS)
    await message.reply_html(s.renderer.html("stats", s=stats))
    funnels = await gather_funnel(s.repo, s.guides, len(s.renderer.quiz()), posts=STATS_POSTS)
    await message.reply_html(s.renderer.html("stats_posts", funnels=funnels))
    if funnels:
        chart = await asyncio.to_thread(
            render_funnel_chart, funnels, s.renderer.text("funnel_chart_title"),
            lambda step: s.renderer.text("funnel_step", step=step), s.renderer.text("funnel_unit"),
            lambda f: s.renderer.text("funnel_post", channel_post=f.channel_post, post=f.post),
        )  # fmt: skip
        await context.bot.send_photo(
            update.effective_chat.id, InputFile(chart, filename="mlm-bot-posts.png"),
            caption=s.renderer.html("stats_funnel_chart"),
        )  # fmt: skip
    chart = await asyncio.to_thread(render_chart, stats, s.renderer.text("chart_title", days=STATS_DAYS))
    await context.bot.send_photo(
        update.effective_chat.id,
        InputFile(chart, filename="mlm-bot-stats.png"),
        caption=s.renderer.html("stats_chart", days=STATS_DAYS),
    )


async def reload_command(update: Update, context: Context) -> None:
    """/reload: the guides again from disk, all or nothing: on a problem the old guides keep answering and the
    admin reads the ``FILE:LINE`` lines. Reloads this process only (every replica: SIGHUP to each)."""
    s = context.bot_data.services
    message = update.effective_message
    if not is_admin(update, context):
        await message.reply_html(s.renderer.html("admin_only"))
        return
    try:
        guides = await s.reload_guides()
    except GuideProblems as exc:
        problems = [str(p) for p in exc.problems]
        await message.reply_html(s.renderer.html("reload_failed", problems=_fit(problems)))
        await log_interaction(update, context, Kind.RELOAD, outcome="refused")
        return
    warnings = _fit([str(w) for w in guides.warnings])
    await message.reply_html(s.renderer.html("reload_done", guides=guides.guides, warnings=warnings))
    await log_interaction(update, context, Kind.RELOAD)


def _fit(lines: list[str], limit: int = 3000) -> list[str]:
    """As many lines as fit in one message (with room for the words around them), then how many more."""
    kept: list[str] = []
    for n, line in enumerate(lines):
        if sum(len(k) + 1 for k in kept) + len(line) > limit:
            kept.append(f"... and {len(lines) - n} more")
            break
        kept.append(line)
    return kept


BROADCAST_PATTERN = r"\Abc:(send|no):\d{1,12}\Z"
PROGRESS_EVERY_S = 3.0


async def broadcast_command(update: Update, context: Context) -> None:
    """/broadcast TEXT (admins, in private): a preview with how many it reaches, then "Send it" or "Cancel"."""
    s = context.bot_data.services
    message = update.effective_message
    if not is_admin(update, context):
        await message.reply_html(s.renderer.html("admin_only"))
        return
    text = message.text.partition(" ")[2].strip() if message.text else ""
    if not text or len(text) > 4000:
        await message.reply_html(s.renderer.html("broadcast_usage"))
        return
    broadcast_id, _ = await s.repo.broadcasts.create(text, None, draft=True)
    count = await s.repo.broadcasts.subscribers()
    send = s.renderer.text("button_broadcast_send", count=count)
    cancel = s.renderer.text("button_broadcast_cancel")
    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton(send, callback_data=f"bc:send:{broadcast_id}"),
          InlineKeyboardButton(cancel, callback_data=f"bc:no:{broadcast_id}")]]
    )  # fmt: skip
    await message.reply_html(s.renderer.html("broadcast_preview", count=count, text=text), reply_markup=keyboard)


async def broadcast_button(update: Update, context: Context) -> None:
    """ "Send it": the draft goes out (once: a second press finds no draft), and this message shows its progress
    (sent / failed / left) until it is done; "Cancel": the draft is dropped."""
    s = context.bot_data.services
    if not is_admin(update, context):
        await answer_query(update, context, s.renderer.text("button_stale"))
        return
    _, action, number = update.callback_query.data.split(":")
    broadcast_id = int(number)
    if action == "no":
        await s.repo.broadcasts.cancel(broadcast_id)
        await answer_query(update, context)
        await _show(update, s.renderer.html("broadcast_progress", p=await s.repo.broadcasts.progress(broadcast_id)))
        return
    queued = await s.repo.broadcasts.launch(broadcast_id)
    await answer_query(update, context)
    if queued is None:  # a second press, or a draft cancelled meanwhile
        return
    shown, last = visible_message(update), None
    while shown is not None:
        progress = await s.repo.broadcasts.progress(broadcast_id)
        html = s.renderer.html("broadcast_progress", p=progress)
        if html != last:  # the same text again is a 400 "message is not modified"
            with contextlib.suppress(TelegramError):  # gone: the broadcast goes on regardless
                await shown.edit_text(html)
            last = html
        if progress is None or progress.state != "sending":
            return
        await asyncio.sleep(PROGRESS_EVERY_S)


async def _show(update: Update, html: str) -> None:
    shown = visible_message(update)
    if shown is not None:
        with contextlib.suppress(TelegramError):
            await shown.edit_text(html)
