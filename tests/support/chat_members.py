"""``getChat`` and ``getChatMember`` as Telegram answers them, for the follow-gate (``REQUIRE_CHANNEL``): a channel
the test adds, each person's status in it, and Telegram's refusals (a channel that does not exist; "member list is
inaccessible" for a bot that is no administrator there). Mixed into the fake Bot API."""

from __future__ import annotations

from typing import Any

from tests.support.telegram_rules import ApiError

BOT_ID = 123456789  # the fake's bot (fake_telegram.BOT_ID)
ADMIN_RIGHTS = dict.fromkeys(
    ("can_be_edited", "is_anonymous", "can_manage_chat", "can_delete_messages", "can_manage_video_chats",
     "can_restrict_members", "can_promote_members", "can_change_info", "can_invite_users", "can_post_stories",
     "can_edit_stories", "can_delete_stories"),
    False,
)  # fmt: skip
RESTRICTIONS = {
    **dict.fromkeys(
        ("can_change_info", "can_invite_users", "can_pin_messages", "can_send_messages", "can_send_polls",
         "can_send_other_messages", "can_add_web_page_previews", "can_manage_topics", "can_send_audios",
         "can_send_documents", "can_send_photos", "can_send_videos", "can_send_video_notes", "can_send_voice_notes",
         "can_edit_tag", "can_react_to_messages"),
        False,
    ),
    "until_date": 0,
}  # fmt: skip


class ChatMembers:
    def _init_members(self) -> None:
        self.channels: dict[int, dict[str, Any]] = {}
        self.statuses: dict[tuple[int, int], dict[str, Any]] = {}  # (channel, user) -> extra fields of a status
        self.bot_not_admin: set[int] = set()  # channels where Telegram keeps the member list from the bot

    def add_channel(self, chat: dict[str, Any], *, bot_is_admin: bool = True) -> None:
        self.channels[chat["id"]] = chat
        if bot_is_admin:
            self.set_status(chat["id"], BOT_ID, "administrator")
        else:
            self.bot_not_admin.add(chat["id"])
            self.set_status(chat["id"], BOT_ID, "member")

    def set_status(self, channel: int, user_id: int, status: str, **fields: Any) -> None:
        """``member``, ``administrator``, ``creator``, ``restricted`` (with ``is_member``), ``left``, ``kicked``."""
        extra: dict[str, Any] = {}
        if status == "administrator":
            extra = dict(ADMIN_RIGHTS)
        elif status == "creator":
            extra = {"is_anonymous": False}
        elif status == "restricted":
            extra = {**RESTRICTIONS, "is_member": True}
        elif status == "kicked":
            extra = {"until_date": 0}
        self.statuses[(channel, user_id)] = {"status": status, **extra, **fields}

    def _channel(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = str(params.get("chat_id", ""))
        for chat in self.channels.values():
            if raw == str(chat["id"]) or (chat.get("username") and raw.lower() == "@" + chat["username"].lower()):
                return chat
        raise ApiError(400, "Bad Request: chat not found", asked_for=True)

    async def api_getchat(self, params: dict[str, Any]) -> dict[str, Any]:
        gifts = dict.fromkeys(
            ("unlimited_gifts", "limited_gifts", "unique_gifts", "premium_subscription", "gifts_from_channels"), False
        )
        return {**self._channel(params), "accent_color_id": 0, "max_reaction_count": 11, "accepted_gift_types": gifts}

    async def api_getchatmember(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._channel(params)
        user_id = int(params["user_id"])
        if chat["id"] in self.bot_not_admin and user_id != BOT_ID:
            raise ApiError(400, "Bad Request: member list is inaccessible", asked_for=True)
        status = self.statuses.get((chat["id"], user_id), {"status": "left"})
        return {**status, "user": {"id": user_id, "is_bot": user_id == BOT_ID, "first_name": f"User {user_id}"}}
