"""The lesson: a guide sent a page at a time, with its buttons; every path to a guide starts here.

Each guide (``bot.guides``) is a lesson: page N of M, Next, Skip to the code, Try it live, Download (.md), Whole
guide at once, the other language and "Continue at page N" on the first page, the guide's links under the last.

**Button data** (this module builds and reads all of it; client-controlled, so a press is checked against the
guides as they are now):

* ``guide`` (the default guide, from a prediction's buttons), ``guide:<slug>`` (a guide from the /guide list);
* ``guide:<slug>:p:<n>`` a page, ``guide:<slug>:all|md|live``; ``guide:p:<n>``, ``guide:all|md|live`` are the
  same for the default guide (buttons sent before there were several guides);
* ``try:<slug>:<page>.<k>``: a page's k-th "Guess, then tap" sentence (the prediction flow answers it);
* ``join:<slug>[:c]``: "✅ I've joined" under the follow-gate's message (``bot.handlers.join``), answered here.

The page travels in the data, so a press works after a restart or on another replica; a page past the end (a
made-up press, or a guide shortened since) is a stale button.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, ReplyParameters, Update
from telegram.helpers import create_deep_linked_url

from bot.context import Context
from bot.guides.library import Guide, GuideLibrary
from bot.handlers import join, quiz
from bot.handlers.common import (
    answer_query,
    log_interaction,
    playground_button,
)
from bot.handlers.follow import subscribe_button
from bot.handlers.language_buttons import switch_language_button
from bot.storage.vocabulary import Kind, Outcome
from bot.text.payloads import guide_payload
from bot.text.render import Renderer

log = logging.getLogger(__name__)

STEPS = ("all", "md", "live")
# Every lesson press; app.py registers it, the button gate lets it through only under its own message.
PATTERN = r"\Aguide(:[a-z0-9][a-z0-9_-]{0,31})?(:(p:\d{1,2}|all|md|live))?\Z"
PROMPT_PATTERN = r"\Atry:[a-z0-9][a-z0-9_-]{0,31}:\d{1,2}\.\d{1,2}\Z"
_PROMPT = re.compile(PROMPT_PATTERN)
# A ready sentence under Try it live: ``try:<n>``, its number in templates/experiments.j2. Built, parsed and matched
# here only (the prediction flow answers both kinds of ``try:`` press: app.py registers TRY_PATTERN for it).
READY_PATTERN = r"\Atry:\d{1,2}\Z"
TRY_PATTERN = rf"{READY_PATTERN}|{PROMPT_PATTERN}"


def ready_data(number: int) -> str:
    return f"try:{number}"


def ready_number(data: str | None) -> int | None:
    """The ready sentence's number of a ``try:<n>`` press; None for any other data (a page's prompt, say)."""
    return int(data[4:]) if data and re.fullmatch(READY_PATTERN, data) else None


def experiments_keyboard(renderer: Renderer) -> InlineKeyboardMarkup:
    """One button per ready sentence: a tap shows the model's guesses for it; then the quiz."""
    rows = [
        [InlineKeyboardButton(label, callback_data=ready_data(n))]
        for n, (label, _) in enumerate(renderer.experiments())
    ]
    rows.append([InlineKeyboardButton(renderer.text("button_quiz"), callback_data=quiz.DATA)])
    return InlineKeyboardMarkup(rows)


@dataclass(frozen=True)
class Press:
    slug: str | None  # None: the default guide
    step: str  # "start", "page", "all", "md", "live"
    page: int | None = None


def parse(data: str | None) -> Press | None:
    """A lesson button's data, or None if it is not one."""
    parts = (data or "").split(":")
    if not parts or parts[0] != "guide" or len(parts) > 4:
        return None
    rest = parts[1:]
    slug = None
    if rest and rest[0] not in ("p", *STEPS):
        slug, rest = rest[0], rest[1:]
    if not rest:
        return Press(slug, "start")
    if rest[0] == "p" and len(rest) == 2 and rest[1].isdigit():
        return Press(slug, "page", int(rest[1]))
    if len(rest) == 1 and rest[0] in STEPS:
        return Press(slug, rest[0])
    return None


def start_data(guide: Guide | None = None) -> str:
    """The lesson's first page: of this guide, or (None) of the guide the person came for, else the default."""
    return "guide" if guide is None else f"guide:{guide.slug}"


def prompt_data(slug: str, page: int, k: int) -> str:
    """A page's k-th "Guess, then tap" button: ``try:<slug>:<page>.<k>`` (a slug is at most 32 characters, a page
    number two digits: always within Telegram's 64 bytes)."""
    return f"try:{slug}:{page}.{k}"


def page_data(guide: Guide, number: int) -> str:
    return f"guide:{guide.slug}:p:{number}"


def step_data(guide: Guide, step: str) -> str:
    return f"guide:{guide.slug}:{step}"


def prompt_sentence(library: GuideLibrary, data: str, language: str | None, model_name: str) -> str | None:
    """The sentence of a page's "Guess, then tap" button (``try:<slug>:<page>.<k>``), or None if that guide, page
    or prompt is not there (any more)."""
    if not _PROMPT.fullmatch(data or ""):
        return None
    _, slug, where = data.split(":")
    page, k = (int(n) for n in where.split("."))
    guide = library.get(slug)
    if guide is None or page >= guide.page_count:
        return None
    prompts = guide.pages(language, model_name)[page].prompts
    return prompts[k].sentence if k < len(prompts) else None


def guide_of(context: Context, slug: str | None) -> Guide | None:
    """The guide a slug names (the default for None), or None if there is no such guide (any more)."""
    guides = context.bot_data.services.guides
    return guides.default if slug is None else guides.get(slug)


def payload_for(context: Context, guide: Guide) -> str:
    """The deep link's payload for a guide: ``mlm`` for the default one (as links handed out before), else
    ``g_<slug>``."""
    return guide_payload(None if guide is context.bot_data.services.guides.default else guide.slug)


# -- sending ---------------------------------------------------------------------------------------------------------


async def send_guide(
    context: Context,
    chat_id: int,
    guide: Guide | None = None,
    *,
    reply_to: Message | None = None,
    keyword: str | None = None,
) -> Outcome:
    """A guide's first page (the default guide's if none is named), with its buttons: the student sets the pace
    (one page a press), can skip to the code, try the model live, download the ``.md`` or have everything at once.
    ``keyword``: what they commented ("You commented BERT"), None when they did not.

    Someone who was part-way through this guide (their last ``lesson`` row for it: in the database, so after a
    restart or on another replica too) also gets "Continue at page N". Raises ``telegram.error.Forbidden`` if the
    user never started the bot or blocked it. Returns ``Outcome.GATED`` when the follow-gate's message went
    instead (REQUIRE_CHANNEL), else ``Outcome.OK``: the outcome of the row that logs it."""
    guide = guide or context.bot_data.services.guides.default
    if not await join.admitted(context, chat_id, guide, keyword):  # the follow-gate (REQUIRE_CHANNEL) asked first
        return Outcome.GATED
    resume = await _lesson_left_at(context, chat_id, guide)
    await send_guide_page(context, chat_id, guide, 0, reply_to=reply_to, keyword=keyword, resume=resume)
    return Outcome.OK


async def _lesson_left_at(context: Context, user_id: int, guide: Guide) -> int | None:
    """The page they were last sent, if it was not the first or the last; None if unknown or the database is slow
    (the lesson is never held up for it)."""
    s = context.bot_data.services
    default = guide.slug == s.guides.default.slug
    try:
        page = await asyncio.wait_for(
            s.repo.interactions.last_lesson_page(user_id, guide.slug, unnamed_too=default), 1.0
        )
    except Exception as exc:
        log.debug("no lesson page to continue at (%s)", type(exc).__name__)
        return None
    return page if page is not None and 0 < page < guide.page_count - 1 else None


async def send_guide_page(
    context: Context,
    chat_id: int,
    guide: Guide,
    number: int,
    *,
    reply_to: Message | None = None,
    keyword: str | None = None,
    resume: int | None = None,
) -> None:
    """Page ``number`` of a guide (0-based; the caller checks the range) with its buttons."""
    s = context.bot_data.services
    language = s.renderer.language()
    pages = guide.pages(language, s.model_label, keyword)
    await context.bot.send_message(
        chat_id,
        pages[number].html,
        reply_markup=lesson_keyboard(s.renderer, guide, number, resume, s.settings.mini_app_url),
        reply_parameters=ReplyParameters(reply_to.message_id, allow_sending_without_reply=True) if reply_to else None,
    )


def links_keyboard(guide: Guide) -> list[list[InlineKeyboardButton]]:
    """The guide's links as URL buttons, two to a row."""
    buttons = [InlineKeyboardButton(link.label, url=link.url) for link in guide.links]
    return [buttons[i : i + 2] for i in range(0, len(buttons), 2)]


def lesson_keyboard(
    renderer: Renderer, guide: Guide, number: int, resume: int | None = None, mini_app_url: str | None = None
) -> InlineKeyboardMarkup:
    """Under page ``number``: its "Guess, then tap" prompts, Next, Skip to the code, Try it live, Download; the
    first page also Whole guide at once and the other language (and Continue at ``resume``); the last one the
    playground (a Mini App, when ``MINI_APP_URL`` is set), "🔔 Tell me when there's a new guide" and the guide's
    links."""
    text = renderer.text
    total = guide.page_count
    language = renderer.language()
    rows: list[list[InlineKeyboardButton]] = []
    if resume is not None:
        label = text("button_continue", page=resume + 1, total=total)
        rows.append([InlineKeyboardButton(label, callback_data=page_data(guide, resume))])
    for k, prompt in enumerate(guide.pages(language, "x")[number].prompts):
        label = text("button_prompt", label=prompt.label)
        rows.append([InlineKeyboardButton(label, callback_data=prompt_data(guide.slug, number, k))])
    if number + 1 < total:
        label = text("button_next", page=number + 2, total=total)
        rows.append([InlineKeyboardButton(label, callback_data=page_data(guide, number + 1))])
    code = guide.code_page()
    if code is not None and number < code:
        rows.append([InlineKeyboardButton(text("button_skip_to_code"), callback_data=page_data(guide, code))])
    rows.append(
        [
            InlineKeyboardButton(text("button_try_live"), callback_data=step_data(guide, "live")),
            InlineKeyboardButton(text("button_download"), callback_data=step_data(guide, "md")),
        ]
    )
    if number == 0:
        rows.append([InlineKeyboardButton(text("button_all_at_once"), callback_data=step_data(guide, "all"))])
        if len(guide.languages) > 1:
            rows.append([switch_language_button(renderer, start_data(guide))])
    if number == total - 1:
        if mini_app_url:
            rows.append([playground_button(renderer, mini_app_url)])
        rows.append([subscribe_button(renderer)])
        rows.extend(links_keyboard(guide))
    return InlineKeyboardMarkup(rows)


async def send_whole_guide(context: Context, chat_id: int, guide: Guide) -> None:
    """Every page at once (the links under the last one), for who asked for it; then the ready sentences."""
    s = context.bot_data.services
    pages = guide.pages(s.renderer.language(), s.model_label)
    for number, page in enumerate(pages):
        keyboard = None
        if number == len(pages) - 1:
            rows = links_keyboard(guide)
            if s.settings.mini_app_url:
                rows.insert(0, [playground_button(s.renderer, s.settings.mini_app_url)])
            keyboard = InlineKeyboardMarkup(rows) if rows else None
        await context.bot.send_message(chat_id, page.html, reply_markup=keyboard)
    await send_experiments(context, chat_id)


async def send_guide_document(context: Context, chat_id: int, guide: Guide) -> None:
    """The ``.md`` download: the guide's pages themselves, in the person's language."""
    s = context.bot_data.services
    language = guide.language_of(s.renderer.language())
    document = guide.markdown(language, s.model_label).encode()
    filename = s.renderer.text("guide_filename", slug=guide.slug, language=language)
    await context.bot.send_document(
        chat_id, InputFile(document, filename=filename), caption=s.renderer.html("guide_document")
    )


async def send_experiments(context: Context, chat_id: int) -> None:
    """The ready sentences, one tap each (bidirectional context, the bias pair), then the quiz."""
    s = context.bot_data.services
    await context.bot.send_message(
        chat_id, s.renderer.html("experiments"), reply_markup=experiments_keyboard(s.renderer)
    )


def guides_keyboard(context: Context) -> InlineKeyboardMarkup:
    """/guide with several guides: one button each, the default first."""
    s = context.bot_data.services
    language = s.renderer.language()
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(s.renderer.text("button_guide_named", title=g.title_in(language)),
                                  callback_data=start_data(g))]
            for g in s.guides.guides
        ]
    )  # fmt: skip


# -- handlers --------------------------------------------------------------------------------------------------------


async def lesson_button(update: Update, context: Context) -> None:
    """Every lesson press (see the module's docstring). In a group (the "What is MLM?" button of a shared inline
    answer), a whole guide would be a wall of text for everyone: the press opens the bot instead."""
    press = parse(update.callback_query.data)
    guide = guide_of(context, press.slug) if press else None
    if press is None or guide is None or (press.page is not None and press.page >= guide.page_count):
        await stale_button(update, context)
        return
    chat = update.effective_chat
    if chat is None or chat.type != chat.PRIVATE:
        url = create_deep_linked_url(context.bot.username, payload_for(context, guide))
        await answer_query(update, context, url=url)
        return
    await answer_query(update, context)
    if press.step == "start":
        outcome = await send_guide(context, chat.id, guide)
        await log_interaction(update, context, Kind.GUIDE, trigger="button", guide=guide.slug, outcome=outcome)
        return
    step = press.step
    if press.page is not None:
        await send_guide_page(context, chat.id, guide, press.page)
        step = f"page{press.page}"
    elif press.step == "all":
        await send_whole_guide(context, chat.id, guide)
    elif press.step == "md":
        await send_guide_document(context, chat.id, guide)
    else:
        await send_experiments(context, chat.id)
    await log_interaction(update, context, Kind.LESSON, trigger=step, guide=guide.slug)


async def stale_button(update: Update, context: Context) -> None:
    """Any other button data: from an old version of the bot, or made up. Answered, so the spinner stops."""
    await answer_query(update, context, context.bot_data.services.renderer.text("button_stale"))


async def joined_button(update: Update, context: Context) -> None:
    """ "✅ I've joined": asked again (never the kept answer); in: the guide follows; not yet: a short line."""
    s = context.bot_data.services
    _, slug, *commented = update.callback_query.data.split(":")
    guide = guide_of(context, slug) or s.guides.default
    try:  # Telegram wants the press answered within seconds: a slow check lets them through (the gate fails open)
        member = await asyncio.wait_for(s.channel_gate.admits(context.bot, update.effective_user.id, fresh=True), 4.0)
    except asyncio.TimeoutError:
        member = True
    if not member:
        await answer_query(update, context, s.renderer.text("answer_not_joined", title=s.channel_gate.title))
        return
    await answer_query(update, context, s.renderer.text("answer_joined"))
    keyword = guide.keywords[0] if commented else None
    await log_interaction(update, context, Kind.GATE, trigger="passed", guide=guide.slug)
    outcome = await send_guide(context, update.effective_chat.id, guide, keyword=keyword)
    await log_interaction(update, context, Kind.GUIDE, trigger="joined", guide=guide.slug, outcome=outcome)
