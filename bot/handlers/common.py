"""Pieces several handlers share: who the user is, the guide, and the keyboards."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    ReplyParameters,
    Update,
    User,
    WebAppInfo,
)
from telegram.helpers import create_deep_linked_url

from bot.context import Context
from bot.logs import update_began_at
from bot.storage.repository import InteractionEntry, UserInfo
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


def learn_more_keyboard(renderer: Renderer) -> InlineKeyboardMarkup:
    links = renderer.learn_more()
    rows = [links[i : i + 2] for i in range(0, len(links), 2)]
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, url=url) for label, _, url in row] for row in rows])


def open_bot_keyboard(bot_username: str, payload: str, label: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, url=create_deep_linked_url(bot_username, payload))]])


def switch_language_button(renderer: Renderer, where: str) -> InlineKeyboardButton:
    """The button that switches to the other language (``lang:<language>:<where>``), named in that language."""
    other = "english" if renderer.language() == "hinglish" else "hinglish"
    return InlineKeyboardButton(
        renderer.text("button_switch_language", name=other), callback_data=f"lang:{other}:{where}"
    )


async def send_guide(
    context: Context, chat_id: int, *, reply_to: Message | None = None, commented: bool = False
) -> None:
    """The lesson's first page, with its buttons: the student sets the pace (``guide:p:<n>``, one page a press),
    can skip to the code, try the model live, download the ``.md`` or have everything at once. Every path to the
    guide (the keyword, a comment, /guide, a deep link, a button) starts here.

    Someone who was part-way through (their last ``lesson`` row: in the database, so after a restart or on another
    replica too) also gets "Continue at page N". Raises ``telegram.error.Forbidden`` if the user never started the
    bot or blocked it."""
    await send_guide_page(
        context, chat_id, 0, reply_to=reply_to, commented=commented, resume=await _lesson_left_at(context, chat_id)
    )


async def _lesson_left_at(context: Context, user_id: int) -> int | None:
    """The page they were last sent, if it was not the first or the last; None if unknown or the database is slow
    (the lesson is never held up for it)."""
    s = context.bot_data.services
    try:
        page = await asyncio.wait_for(s.repo.interactions.last_lesson_page(user_id), 1.0)
    except Exception as exc:
        log.debug("no lesson page to continue at (%s)", type(exc).__name__)
        return None
    total = len(s.renderer.guide_messages(model_name=s.model_label))
    return page if page is not None and 0 < page < total - 1 else None


async def send_guide_page(
    context: Context,
    chat_id: int,
    number: int,
    *,
    reply_to: Message | None = None,
    commented: bool = False,
    resume: int | None = None,
) -> None:
    """Page ``number`` of the lesson (0-based; the caller checks the range) with its buttons. The buttons carry the
    page, so a restart or another replica goes on from the page pressed."""
    s = context.bot_data.services
    pages = s.renderer.guide_messages(model_name=s.model_label, commented=commented)
    await context.bot.send_message(
        chat_id,
        pages[number],
        reply_markup=lesson_keyboard(s.renderer, number, len(pages), resume, s.settings.mini_app_url),
        reply_parameters=ReplyParameters(reply_to.message_id, allow_sending_without_reply=True) if reply_to else None,
    )


def playground_button(renderer: Renderer, mini_app_url: str) -> InlineKeyboardButton:
    """Opens the playground Mini App (private chats only: Telegram refuses Mini App buttons in groups), with the
    page's words in the person's language."""
    return InlineKeyboardButton(
        renderer.text("button_playground"), web_app=WebAppInfo(f"{mini_app_url}?lang={renderer.language()}")
    )


def lesson_keyboard(
    renderer: Renderer, number: int, total: int, resume: int | None = None, mini_app_url: str | None = None
) -> InlineKeyboardMarkup:
    """Under page ``number``: its prediction prompts (ready sentences, ``try:<n>``), Next, Skip to code, Try it
    live, Download, All at once; the first page also the other language (and Continue at ``resume``), the last one
    the playground (a Mini App, when ``MINI_APP_URL`` is set) and the links to learn more."""
    text = renderer.text
    rows: list[list[InlineKeyboardButton]] = []
    if resume is not None:
        label = text("button_continue", page=resume + 1, total=total)
        rows.append([InlineKeyboardButton(label, callback_data=f"guide:p:{resume}")])
    experiments = renderer.experiments()
    for n in renderer.guide_prompts().get(number, ()):
        rows.append([InlineKeyboardButton(text("button_prompt", label=experiments[n][0]), callback_data=f"try:{n}")])
    if number + 1 < total:
        rows.append(
            [
                InlineKeyboardButton(
                    text("button_next", page=number + 2, total=total), callback_data=f"guide:p:{number + 1}"
                )
            ]
        )
    code = renderer.guide_code_page()
    if number < code:
        rows.append([InlineKeyboardButton(text("button_skip_to_code"), callback_data=f"guide:p:{code}")])
    rows.append(
        [
            InlineKeyboardButton(text("button_try_live"), callback_data="guide:live"),
            InlineKeyboardButton(text("button_download"), callback_data="guide:md"),
        ]
    )
    if number == 0:
        rows.append([InlineKeyboardButton(text("button_all_at_once"), callback_data="guide:all")])
        rows.append([switch_language_button(renderer, "guide")])
    if number == total - 1:
        if mini_app_url:
            rows.append([playground_button(renderer, mini_app_url)])
        rows.extend(learn_more_keyboard(renderer).inline_keyboard)
    return InlineKeyboardMarkup(rows)


async def send_whole_guide(context: Context, chat_id: int) -> None:
    """Every page at once (the links under the last one), for who asked for it."""
    s = context.bot_data.services
    pages = s.renderer.guide_messages(model_name=s.model_label)
    for number, page in enumerate(pages):
        keyboard = None
        if number == len(pages) - 1:
            rows = list(learn_more_keyboard(s.renderer).inline_keyboard)
            if s.settings.mini_app_url:
                rows.insert(0, [playground_button(s.renderer, s.settings.mini_app_url)])
            keyboard = InlineKeyboardMarkup(rows)
        await context.bot.send_message(chat_id, page, reply_markup=keyboard)
    await send_experiments(context, chat_id)


async def send_guide_document(context: Context, chat_id: int) -> None:
    s = context.bot_data.services
    document = s.renderer.guide_markdown(model_name=s.model_label).encode()
    await context.bot.send_document(
        chat_id,
        InputFile(document, filename=s.renderer.text("guide_filename")),
        caption=s.renderer.html("guide_document"),
    )


async def send_experiments(context: Context, chat_id: int) -> None:
    """The ready sentences, one tap each (bidirectional context, the bias pair), then the quiz."""
    s = context.bot_data.services
    await context.bot.send_message(
        chat_id, s.renderer.html("experiments"), reply_markup=experiments_keyboard(s.renderer)
    )


def experiments_keyboard(renderer: Renderer) -> InlineKeyboardMarkup:
    """One button per ready sentence (``try:<n>``): a tap shows the model's guesses for it; then the quiz."""
    rows = [
        [InlineKeyboardButton(label, callback_data=f"try:{n}")] for n, (label, _) in enumerate(renderer.experiments())
    ]
    rows.append([InlineKeyboardButton(renderer.text("button_quiz"), callback_data="quiz")])
    return InlineKeyboardMarkup(rows)


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
