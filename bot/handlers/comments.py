"""Keyword comments in a channel's discussion group: the guide by DM, or a button that leads to the DM.

A bot cannot write to a user first. Someone who already started the bot gets the guide in private (and a
reaction on the comment); anyone else is named in a public reply with a button that opens the bot with a
``/start <payload>`` deep link (``bot.public_replies`` coalesces those replies). Once per person per post (a
message outside any thread: once per person in that group): the database's unique constraint decides. Each
keyword comment also spends its sender's action budget (``bot.handlers.admission``), so no one can keep the bot's
update slots busy with them.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace

from telegram import Message, MessageOriginChannel, ReactionTypeEmoji, Update
from telegram.error import Forbidden, TelegramError

from bot.handlers.common import Context, entry, log_interaction, open_bot_keyboard, started_at
from bot.handlers.lesson import send_guide
from bot.public_replies import Commenter, Unsent, owed
from bot.storage.vocabulary import Kind, Outcome
from bot.storage.writer import is_transient
from bot.storage.writes import CommentClaimed, OwedReply, UserUnreachable
from bot.text.payloads import post_payload

log = logging.getLogger(__name__)

# Telegram's service accounts that stand in for a channel or an anonymous admin: no real person to DM.
SERVICE_USER_IDS = {777000, 1087968824, 136817688}


# Handler group of remember_post: right after tracking.begin, before anything in an update's handling that waits
# (the language lookup first). Updates are handled concurrently, so a comment that arrives with its post's forward
# (a burst, or the inbox replayed after a restart) would otherwise be handled before the post is known.


NO_THREAD = 0  # a keyword message outside any discussion thread: its "post" is the group itself


def thread_root(message: Message) -> int:
    """The discussion thread a comment belongs to (the group's copy of the channel post), or ``NO_THREAD`` for a
    message outside any thread: then the once-per-post rule is once per person in that group, never once per
    message (three top-level "MLM" messages were three claims, three replies)."""
    if message.message_thread_id:
        return message.message_thread_id
    replied = message.reply_to_message
    if replied is not None and replied.is_automatic_forward:
        return replied.message_id
    return NO_THREAD


async def remember_post(update: Update, context: Context) -> None:
    """The automatic forward of a channel post into its discussion group: learn which post a thread is."""
    message = update.effective_message
    if isinstance(message.forward_origin, MessageOriginChannel):
        context.bot_data.posts[(message.chat_id, message.message_id)] = (
            message.forward_origin.chat.id,
            message.forward_origin.message_id,
        )


async def keyword_comment(update: Update, context: Context) -> None:
    s = context.bot_data.services
    message = update.effective_message
    found = s.guides.detect(message.text or message.caption)
    if found is None:  # the guides were reloaded between the filter and here
        return
    guide, keyword = found
    root = thread_root(message)
    post_key = f"{message.chat_id}:{root}"
    channel_post = context.bot_data.posts.get((message.chat_id, root))
    user = message.from_user
    as_channel = message.sender_chat is not None or user is None or user.id in SERVICE_USER_IDS
    actor = message.sender_chat.id if message.sender_chat else user.id
    trigger = f"{keyword} on {channel_post[0]}:{channel_post[1]}" if channel_post else keyword
    public_language = s.renderer.default_language  # a public reply, for everyone under the post
    button = s.renderer.text("button_get_guide", name=guide.name_in(public_language), language=public_language)
    slug = None if guide is s.guides.default else guide.slug  # the default guide's links stay as they were
    keyboard = open_bot_keyboard(context.bot.username, post_payload(message.chat_id, root, slug), button)
    commenter = Commenter(
        message_id=message.message_id,
        name=None if as_channel else user.first_name,
        user_id=None if as_channel else user.id,
        entry=entry(update, "comment", trigger=trigger, input_text=message.text, guide=guide.slug, post=post_key),
    )
    public = as_channel or not await _may_dm(context, user.id)
    # A public reply waits for the group's allowance (minutes, under a viral post): it is an outbox row from the
    # moment it is owed, written with the claim in one transaction, so a kill at any point loses none.
    owed_row = owed(Unsent(message.chat_id, root, commenter, keyboard, guide.slug))
    claimed, outbox_id = await _claim(update, context, post_key, actor, owed_row if public else None)
    if not claimed:
        return  # once per person per post: no second public reply

    if not public:
        try:
            sent = await send_guide(context, user.id, guide, keyword=keyword)
        except Forbidden as exc:
            blocked = "blocked" in str(exc).lower()
            await s.log(UserUnreachable(user.id, blocked, started_at(update)))
            outbox_id = await _owe(context, owed_row)
        else:
            with contextlib.suppress(TelegramError):  # reactions may be off in this group
                await message.set_reaction(ReactionTypeEmoji("👍"))
            await log_interaction(
                update, context, Kind.COMMENT, trigger=trigger, input_text=message.text,
                outcome=Outcome.DM if sent is Outcome.OK else sent,
                guide=guide.slug, post=post_key,
            )  # fmt: skip
            return

    s.comment_replies.add(message.chat_id, root, replace(commenter, outbox_id=outbox_id), keyboard, guide.slug)


async def _claim(
    update: Update, context: Context, post_key: str, actor: int, owed_row: OwedReply | None
) -> tuple[bool, int | None]:
    """The once-per-post rule: the database's unique constraint decides; with the claim, the public reply it owes
    (its outbox row's id comes back). While the database is locked or away, this process remembers the claim and
    the writer records it later: the comment is still answered, once (its reply kept in memory meanwhile)."""
    s = context.bot_data.services
    if (post_key, actor) in s.claims_in_memory:
        return False, None
    try:
        outbox_id = await s.repo.comments.claim_and_owe(post_key, actor, owed_row)
        return outbox_id is not None, (outbox_id or None)
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("could not record a comment claim now (%s); answering and recording it later", type(exc).__name__)
        if not s.claim_in_memory(post_key, actor):
            return False, None
        await s.log(CommentClaimed(post_key, actor, started_at(update)))
        return True, None


async def _owe(context: Context, owed_row: OwedReply) -> int | None:
    """The outbox row of a reply owed after all (the DM was refused); None (kept in memory) if the database is
    away now."""
    try:
        return await context.bot_data.services.repo.outbox.add(owed_row)
    except Exception as exc:
        if not is_transient(exc):
            raise
        return None


async def _may_dm(context: Context, user_id: int) -> bool:
    """Whether the user started the bot; if the database cannot say right now, try the DM (Telegram answers
    Forbidden if it is not allowed, and the public reply follows)."""
    try:
        return await context.bot_data.services.repo.users.can_dm(user_id)
    except Exception as exc:
        if not is_transient(exc):
            raise
        return True
