"""The follow-gate's side of the chat (``bot.channel_gate`` decides): before a guide, someone who is not in the
creator's channel gets one message in the creator's voice, a button to the channel and "✅ I've joined" (whose
press the lesson answers: ``bot.handlers.lesson.joined_button``, which sends the guide).

Button data ``join:<slug>`` (``join:<slug>:c``: they had commented its keyword): client-controlled like all button
data, so the guide is looked up again and the membership asked again; a guide gone since is the default one.
Only guides are gated: predictions, the playground and the quiz never are, and a guide with ``gate = false`` in
its ``guide.toml`` is not either.
"""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.context import Context
from bot.guides import Guide
from bot.logs import update_began_at
from bot.storage.vocabulary import Kind
from bot.storage.writes import InteractionEntry, UserInfo

PATTERN = r"\Ajoin:[a-z0-9][a-z0-9_-]{0,31}(:c)?\Z"


def joined_data(guide: Guide, commented: bool) -> str:
    return f"join:{guide.slug}" + (":c" if commented else "")


async def admitted(context: Context, chat_id: int, guide: Guide, keyword: str | None) -> bool:
    """True if the guide may be sent to this person now; otherwise the request to join is sent, and False."""
    s = context.bot_data.services
    gate = s.channel_gate
    if not guide.gate or await gate.admits(context.bot, chat_id):
        return True
    rows = []
    if gate.url:
        rows.append([InlineKeyboardButton(s.renderer.text("button_join_channel", title=gate.title), url=gate.url)])
    rows.append(
        [InlineKeyboardButton(s.renderer.text("button_joined"), callback_data=joined_data(guide, bool(keyword)))]
    )
    await context.bot.send_message(
        chat_id, s.renderer.html("join_channel", title=gate.title), reply_markup=InlineKeyboardMarkup(rows)
    )
    shown = InteractionEntry(
        Kind.GATE, UserInfo(chat_id), chat_id, "private", trigger="shown", guide=guide.slug,
        created_at=update_began_at(),
    )  # fmt: skip
    await s.log(shown)
    return False
