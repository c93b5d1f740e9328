"""The follow-gate (``REQUIRE_CHANNEL``): people join the creator's channel before a guide's first page.

Telegram tells a bot who is a member of a channel (``getChatMember``) only when the bot is an administrator there.
So the gate is checked once at start-up (:meth:`ChannelGate.probe`): a channel that does not exist, or where the bot
is no admin, is one warning and the gate stays open, never a lock that keeps everyone out. The same holds later: if
Telegram stops answering who is a member ("member list is inaccessible", the bot demoted), the gate opens, with one
warning; a call that fails on the way lets that one person through and is not remembered.

Answers are kept a few minutes per person (``CHECK_KEPT_S``), so a lesson's pages and a second guide cost no
call; "✅ I've joined" asks again. ``getChatMember`` is no message: it is paced with the bot's 30 calls a second,
not with the channel's 20 messages a minute (``bot.flood_control``).
"""

from __future__ import annotations

import logging

from cachetools import TTLCache
from telegram import Bot, ChatMember
from telegram.error import BadRequest, Forbidden, TelegramError

log = logging.getLogger(__name__)

CHECK_KEPT_S = 300.0
CHECKS_KEPT = 20_000  # people whose answer is kept at once: about 280 B each in the cache, 5.6 MB at most
MEMBER = frozenset({ChatMember.MEMBER, ChatMember.ADMINISTRATOR, ChatMember.OWNER})
# What Telegram answers for a person it does not know in that chat: not a member (not the gate's fault).
NOT_A_PARTICIPANT = ("user not found", "participant_id_invalid", "user_not_participant")


def is_member(member: ChatMember) -> bool:
    """``member``, ``administrator``, ``creator``, or ``restricted`` while still a member."""
    return member.status in MEMBER or (member.status == ChatMember.RESTRICTED and bool(getattr(member, "is_member", 0)))


class ChannelGate:
    def __init__(self, channel: str | int | None) -> None:
        self.channel = channel
        self.enabled = channel is not None
        self.title = str(channel or "")
        self.url: str | None = None  # where the Join button goes: t.me/<name>, or the invite link of a private one
        self._known: TTLCache[int, bool] = TTLCache(CHECKS_KEPT, ttl=CHECK_KEPT_S)

    def _open(self, why: str) -> None:
        if self.enabled:
            log.warning(
                "REQUIRE_CHANNEL=%s: %s, so the bot cannot see who joined: everyone gets the guides. Make the bot an "
                "administrator of the channel (no rights needed) and restart it.", self.channel, why,
            )  # fmt: skip
        self.enabled = False

    async def probe(self, bot: Bot) -> None:
        """At start-up: the channel, its title and link, and whether the bot may ask who is a member."""
        if not self.enabled:
            return
        try:
            chat = await bot.get_chat(self.channel)  # type: ignore[arg-type]
            me = await bot.get_chat_member(chat.id, bot.id)
        except (BadRequest, Forbidden) as exc:
            self._open(f"Telegram says {exc.message!r}")
            return
        except TelegramError as exc:  # the network: try at the first person instead
            log.warning("REQUIRE_CHANNEL=%s: could not look the channel up now (%s)", self.channel, exc)
            return
        self.channel = chat.id
        self.title = chat.title or chat.username or self.title
        self.url = f"https://t.me/{chat.username}" if chat.username else chat.invite_link
        if me.status not in (ChatMember.ADMINISTRATOR, ChatMember.OWNER):
            self._open("the bot is not an administrator of that channel")
        else:
            log.info("guides are for members of %s (REQUIRE_CHANNEL)", self.title)

    async def admits(self, bot: Bot, user_id: int, *, fresh: bool = False) -> bool:
        """Whether this person may have a guide now: a member, or the gate cannot tell (open)."""
        if not self.enabled:
            return True
        if not fresh and (known := self._known.get(user_id)) is not None:
            return known
        try:
            member = await bot.get_chat_member(self.channel, user_id)  # type: ignore[arg-type]
        except BadRequest as exc:
            if not any(word in exc.message.lower() for word in NOT_A_PARTICIPANT):
                self._open(f"Telegram says {exc.message!r}")  # member list inaccessible, admin rights gone ...
                return True
            admitted = False
        except Forbidden as exc:  # the bot was removed from the channel
            self._open(f"Telegram says {exc.message!r}")
            return True
        except TelegramError as exc:  # on the way: this person now, the next one asks again
            log.warning("could not check a channel membership now (%s): letting them through", type(exc).__name__)
            return True
        else:
            admitted = is_member(member)
        self._known[user_id] = admitted
        return admitted

    def forget(self, user_id: int) -> None:
        self._known.pop(user_id, None)
