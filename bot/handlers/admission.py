"""The door every update passes before the handlers that answer it: one budget per person, and buttons checked.

* **The budget** (``bot.budgets.ActionBudget``): every private message, every command or keyword comment in a
  group and every button press costs one action of its sender's budget, however many messages the answer takes
  (the guide's pages are one action). Over it, the person is told once a minute to slow down (a message in
  private, a line on the button), then hears nothing; groups never hear it. One person's flood therefore costs
  the bot a few answers a minute, paced by Telegram's per-chat allowance (``bot.flood_control``), and never the
  other people's turn.
* **Buttons** (``callback_data`` is written by the client, not by the bot): a press is handled only if its data
  is one of the buttons of the message it came from, and, in a group, only if the action belongs there (the
  guide button, which answers with a link to the private chat). Anything else (forged data, a button on an
  inline message, on a message too old to read) gets a short line on the button and changes nothing.

A refused update still ends like any other: its log line, and the inbox stops replaying it.
"""

from __future__ import annotations

from collections.abc import Callable

from telegram import Message, Update
from telegram.ext import ApplicationHandlerStop

from bot.budgets import Verdict
from bot.handlers.common import Context, answer_query, log_interaction
from bot.logs import CURRENT
from bot.storage.vocabulary import Kind, Outcome
from bot.updates import inbox, tracking

GROUP_BUTTONS = frozenset({"guide"})  # the one press that may act under a message in a group (it opens the bot)


def budget_person(update: Update, asks_for_guide: Callable[[str | None], bool] = lambda text: False) -> int | None:
    """Whose budget this update spends, or None if it spends none (inline queries have their own limit; quiz
    answers, edits and a group's chatter are not requests). A keyword comment in a group is a request like any
    other (a DM guide or a public reply): it spends its sender's budget, the channel's or the group's when
    someone comments as one (Telegram's stand-in account is shared by all of them)."""
    if update.callback_query is not None:
        return update.callback_query.from_user.id
    message = update.message
    if message is None or message.from_user is None:
        return None
    if message.chat.type == message.chat.PRIVATE:
        return message.from_user.id
    if (message.text or "").startswith("/"):  # a command in a group: its answer spends the group's allowance
        return message.from_user.id
    if not message.is_automatic_forward and asks_for_guide(message.text or message.caption):
        return message.sender_chat.id if message.sender_chat is not None else message.from_user.id
    return None


async def stop_here(update: Update, context: Context) -> None:
    """End the update's handling now: what the last handler groups would do, then no further handler."""
    await tracking.finish(update, context)
    await inbox.mark_done(update, context)
    raise ApplicationHandlerStop


async def admit(update: object, context: Context) -> None:
    if not isinstance(update, Update):
        return
    s = context.bot_data.services
    person = budget_person(update, lambda text: s.guides.detect(text) is not None)
    if person is None:
        return
    verdict = await s.budget.admit(person)
    if verdict is Verdict.GO:
        trace = CURRENT.get()
        if trace is not None and trace.update_id == update.update_id:
            trace.budget_person = person  # tracking.finish gives the action back
        return
    s.metrics.refused.labels("over_budget").inc()
    if update.callback_query is not None:  # an answer is due anyway (the spinner); it costs no chat message
        await answer_query(update, context, s.renderer.text("answer_slow_down") if verdict is Verdict.WARN else None)
    elif verdict is Verdict.WARN and update.effective_chat.type == update.effective_chat.PRIVATE:
        await update.effective_message.reply_html(s.renderer.html("slow_down"))
    if verdict is Verdict.WARN:
        await log_interaction(update, context, Kind.LIMIT, outcome=Outcome.OVER_BUDGET)
    await stop_here(update, context)


def own_buttons(message: Message) -> set[str]:
    markup = message.reply_markup
    rows = markup.inline_keyboard if markup is not None else ()
    return {button.callback_data for row in rows for button in row if isinstance(button.callback_data, str)}


async def check_button(update: object, context: Context) -> None:
    if not isinstance(update, Update) or update.callback_query is None:
        return
    s = context.bot_data.services
    query = update.callback_query
    message = query.message
    if message is None:
        # A message sent through inline mode: the bot's inline results carry link buttons only, so any data
        # here was made up.
        reason, text = "inline_message", s.renderer.text("answer_not_here")
    elif not isinstance(message, Message) or not message.is_accessible:
        # Too old for Telegram to show the bot (or deleted): its buttons cannot be checked, or answered under.
        reason, text = "inaccessible", s.renderer.text("button_stale")
    elif query.data not in own_buttons(message):
        reason, text = "forged_button", s.renderer.text("button_stale")
    elif message.chat.type != message.chat.PRIVATE and query.data not in GROUP_BUTTONS:
        reason, text = "private_only", s.renderer.text("answer_private_only")
    else:
        return
    s.metrics.refused.labels(reason).inc()
    await answer_query(update, context, text)
    await stop_here(update, context)
