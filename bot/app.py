"""Builds the Application and registers every handler, in order. Read this file to know the whole bot.

Order matters: PTB gives an update to the first matching handler of a group, so specific handlers come
before general ones (deep-link /start before plain /start, masks before the keyword, the catch-all last).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from telegram import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeDefault,
    LinkPreviewOptions,
    MenuButtonWebApp,
    Message,
    Update,
    WebAppInfo,
)
from telegram.constants import ParseMode
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    Defaults,
    InlineQueryHandler,
    MessageHandler,
    PollAnswerHandler,
    TypeHandler,
    filters,
)

from bot import telegram_request
from bot.config import BotSettings
from bot.context import CONTEXT_TYPES
from bot.flood_control import BotRateLimiter
from bot.handlers import (
    admin,
    admission,
    comments,
    compare,
    failures,
    fallback,
    follow,
    guide,
    inline,
    join,
    language,
    language_buttons,
    lesson,
    predict,
    privacy,
    quiz,
    tap,
)
from bot.services import BotServices
from bot.telegram_request import TelegramRequest
from bot.updates import inbox, tracking


class KeywordFilter(filters.MessageFilter):
    """Text or caption with one of the guides' keywords, under its guide's rule (``bot.guides``): the guides as
    they are now (``/reload`` and SIGHUP replace them)."""

    def __init__(self, services: BotServices) -> None:
        super().__init__(name="KeywordFilter")
        self.services = services

    def filter(self, message: Message) -> bool:
        return self.services.guides.detect(message.text or message.caption) is not None


class MaskFilter(filters.MessageFilter):
    """Text with a mask in any spelling the model accepts."""

    def __init__(self, has_mask: Callable[[str | None], bool]) -> None:
        super().__init__(name="MaskFilter")
        self.has_mask = has_mask

    def filter(self, message: Message) -> bool:
        return self.has_mask(message.text)


class FromBotFilter(filters.MessageFilter):
    def filter(self, message: Message) -> bool:
        return bool(message.from_user and message.from_user.is_bot)


class BotApplication(Application):
    """python-telegram-bot's Application, minus a leak: without persistence it still notes the user and chat id
    of every update for a persistence update that never comes (two sets that grew by every new person, for the
    life of the process)."""

    def _mark_for_persistence_update(self, *, update: object | None = None, job: Any = None) -> None:
        if self.persistence is not None:
            super()._mark_for_persistence_update(update=update, job=job)


def build_application(settings: BotSettings, services: BotServices) -> Application:
    # The bot is built here, not by the builder, so that it is the inbox's (bot.updates.inbox.InboxBot): the
    # Updater polls through it and the updates it returns answer through it, with these defaults.
    bot = inbox.InboxBot(
        settings.token(),
        base_url=settings.telegram_api_base_url,
        base_file_url=settings.telegram_api_base_url.replace("/bot", "/file/bot"),
        # PTB's own HTTP layer and pool sizes; Telegram's failures told apart (for the retries) and counted.
        request=TelegramRequest(
            services.metrics, connection_pool_size=256, read_timeout=telegram_request.READ_TIMEOUT_S
        ),
        get_updates_request=TelegramRequest(services.metrics, connection_pool_size=1),
        defaults=Defaults(
            parse_mode=ParseMode.HTML,
            link_preview_options=LinkPreviewOptions(is_disabled=True),
            do_quote=True,
            # A reply to a message its author deleted meanwhile still goes out (in a private chat that is
            # what they want; comment replies in groups set it off, to stay in the thread).
            allow_sending_without_reply=True,
        ),
        # Paces sends to Telegram's limits (30/s overall, 20/min per group; reactions outside the group's) and
        # retries 429 RetryAfter.
        rate_limiter=BotRateLimiter(max_retries=5),
    )
    application = (
        ApplicationBuilder()
        .application_class(BotApplication)
        .bot(bot)
        .context_types(CONTEXT_TYPES)  # context.bot_data is a BotData: its .services is typed
        # Model calls take a while: other users' updates must not wait behind them.
        .concurrent_updates(True)
        .build()
    )
    application.bot_data.attach(services)
    register_handlers(application, settings, services)
    return application


# The handler groups, in the order python-telegram-bot runs them for every update (each group's first matching
# handler runs; a handler that raises ApplicationHandlerStop ends the update there).
FIRST_GROUP = -100  # follow the update: its ids on every log line, metrics
POSTS_GROUP = -99  # a channel post forwarded into its discussion group: remember it, before any wait
LANGUAGE_GROUP = -98  # the person's language, before anything is said
BUDGET_GROUP = -97  # the action budget: after the language, so "slow down" is in it
BUTTONS_GROUP = -96  # a press must be one of its message's own buttons
ANSWER_GROUP = 0  # the answers: one handler per flow
LAST_GROUP = 100  # this update is done (never replayed); LAST_GROUP - 1 closes its trace


def register_handlers(application: Application, settings: BotSettings, services: BotServices) -> None:
    private = filters.ChatType.PRIVATE
    groups = filters.ChatType.GROUPS
    new = filters.UpdateType.MESSAGE  # edits of old messages are not new requests
    keyword = KeywordFilter(services)
    mask = MaskFilter(services.has_mask)
    add = application.add_handler

    # First group: follow the update (metrics; its ids on every log line written while it is handled).
    add(TypeHandler(Update, tracking.begin), group=FIRST_GROUP)
    # A channel post forwarded into its discussion group: remember the post (never answered), before any wait.
    add(MessageHandler(groups & filters.IS_AUTOMATIC_FORWARD, comments.remember_post), group=POSTS_GROUP)
    # Then: what the bot says while handling it is in the person's chosen language (English or Hinglish).
    add(TypeHandler(Update, language.use_persons_language), group=LANGUAGE_GROUP)
    # Then the door: every private message, group command and button press spends its sender's action budget
    # (over it: "slow down" once a minute, then silence); a button acts only if it is one of its message's own
    # and belongs in that chat. A refused update ends here.
    add(TypeHandler(Update, admission.admit), group=BUDGET_GROUP)
    add(TypeHandler(Update, admission.check_button), group=BUTTONS_GROUP)
    # Commands answer new messages only: editing "/predict ..." or "/guide" must not run them again.
    # /start with a payload (a deep link the bot handed out) must come before the plain /start.
    add(CommandHandler("start", guide.start_with_payload, filters=new & private & filters.Regex(r"\A/start\s+\S")))
    # /start alone: greeting, and the user can now receive DMs.
    add(CommandHandler("start", guide.start, filters=new & private))
    add(CommandHandler("help", guide.help_command, filters=new))
    # /guide: the guide in private; in a group, a button to get it privately.
    add(CommandHandler("guide", guide.guide_command, filters=new))
    add(CommandHandler("predict", predict.predict_command, filters=new & private))
    # /quiz: five quiz polls, one at a time, in private (in a group the polls would flood the chat).
    add(CommandHandler("quiz", quiz.quiz_command, filters=new & private))
    # /compare: the sentence through each of COMPARE_MODELS, side by side.
    add(CommandHandler("compare", compare.compare_command, filters=new & private))
    # Admin statistics in private (the handler refuses non-admins politely); in a group, never the numbers in
    # public: a pointer to the private chat.
    add(CommandHandler("stats", admin.stats_command, filters=new & private))
    # /broadcast TEXT (admins, in private): a preview, then "Send it" to the subscribers, with its progress.
    add(CommandHandler("broadcast", admin.broadcast_command, filters=new & private))
    add(CallbackQueryHandler(admin.broadcast_button, pattern=admin.BROADCAST_PATTERN))
    # /reload (admins, in private): read the guides again from disk, as SIGHUP does.
    add(CommandHandler("reload", admin.reload_command, filters=new & private))
    # /forget in private asks for confirmation; in a group it points to the private chat.
    add(CommandHandler("forget", privacy.forget_command, filters=new & private))
    # /language [english|hinglish]: the language of the bot's messages, remembered per person.
    add(CommandHandler("language", language.language_command, filters=new & private))
    # /subscribe, /unsubscribe: new-guide messages, only for who asked (mlm-bot broadcast).
    add(CommandHandler("subscribe", follow.subscribe_command, filters=new & private))
    add(CommandHandler("unsubscribe", follow.unsubscribe_command, filters=new & private))
    private_commands = [
        "forget",
        "stats",
        "reload",
        "broadcast",
        "quiz",
        "compare",
        "language",
        "subscribe",
        "unsubscribe",
    ]
    add(CommandHandler(private_commands, privacy.private_only, filters=new))
    # Buttons under a prediction and the greeting.
    # (":x<n>": the answer is for the guide's ready sentence n.)
    add(CallbackQueryHandler(predict.more_button, pattern=predict.MORE_PATTERN))
    add(CallbackQueryHandler(predict.fewer_button, pattern=predict.FEWER_PATTERN))
    add(CallbackQueryHandler(predict.chart_button, pattern=predict.CHART_PATTERN))
    add(CallbackQueryHandler(compare.compare_button, pattern=predict.COMPARE_PATTERN))
    # The ready sentences (bidirectional context) and the "Guess, then tap" sentences under a guide's pages.
    add(CallbackQueryHandler(predict.experiment_button, pattern=lesson.TRY_PATTERN))
    add(CallbackQueryHandler(tap.tap_button, pattern=tap.PATTERN))
    add(CallbackQueryHandler(quiz.quiz_button, pattern=quiz.PATTERN))
    # Answers to the quiz's polls.
    add(PollAnswerHandler(quiz.poll_answer))
    # The lesson's buttons (bot.handlers.lesson): a guide, a page (Next, Skip to the code), all at once, the .md
    # file, try it live.
    add(CallbackQueryHandler(lesson.lesson_button, pattern=lesson.PATTERN))
    # "🔔 Tell me when there's a new guide" / "🔕 Stop" under a guide's last page and the greeting.
    add(CallbackQueryHandler(follow.subscribe_button_pressed, pattern=follow.PATTERN))
    # "✅ I've joined" under the follow-gate's message (REQUIRE_CHANNEL).
    add(CallbackQueryHandler(lesson.joined_button, pattern=join.PATTERN))
    # The language chooser, and the switch under the greeting and a guide.
    add(CallbackQueryHandler(language.language_button, pattern=language_buttons.PATTERN))
    add(CallbackQueryHandler(privacy.forget_button, pattern=privacy.PATTERN))
    # Any other button data (an old version's, or made up): answered, so no spinner is left turning.
    add(CallbackQueryHandler(lesson.stale_button))
    # Inline mode: @bot <sentence with [MASK]>, @bot mlm.
    add(InlineQueryHandler(inline.inline_query))
    # A keyword comment in a group (not from bots, not the channel's own post): the guide by DM or a button, once
    # per person per post.
    add(
        MessageHandler(
            groups & new & keyword & ~filters.IS_AUTOMATIC_FORWARD & ~filters.VIA_BOT & ~FromBotFilter(),
            comments.keyword_comment,
        )
    )
    # Private text with a mask: a live prediction (before the keyword: "MLM [MASK]" is a sentence to fill).
    add(MessageHandler(private & new & filters.TEXT & ~filters.COMMAND & mask, predict.predict_message))
    # Private text with the keyword: the guide.
    add(MessageHandler(private & new & keyword & ~filters.COMMAND, guide.keyword_message))
    # Private text with neither: a button per word, to hide one from the model (short or one-word text: a hint).
    add(MessageHandler(private & new & filters.TEXT & ~filters.COMMAND, tap.offer_words))
    # Anything else in private (text, stickers, photos, unknown commands): a short hint. Groups: silence.
    add(MessageHandler(private & new, fallback.private_fallback))
    # Last groups: the update's handling has finished: its latency and log line; the inbox stops replaying it.
    add(TypeHandler(Update, tracking.finish), group=LAST_GROUP - 1)
    add(TypeHandler(Update, inbox.mark_done), group=LAST_GROUP)
    application.add_error_handler(failures.error_handler)


def schedule_jobs(application: Application) -> None:
    """Retention: a second after start-up, then every day. (An interval job whose first run is already due
    when the scheduler looks at it, as with ``first=0``, is moved to the next interval: a day later.)"""
    application.job_queue.run_repeating(
        privacy.retention_job, interval=timedelta(days=1), first=timedelta(seconds=1), name="retention"
    )


async def register_commands(application: Application, services: BotServices) -> None:
    """The command lists Telegram shows in the menu: everywhere the ones that work everywhere; in private chats
    also /predict and /forget, which work only there."""
    text = services.renderer.text
    everywhere = [
        BotCommand("start", text("command_start")),
        BotCommand("guide", text("command_guide")),
        BotCommand("help", text("command_help")),
    ]
    private = [
        *everywhere[:2],
        BotCommand("predict", text("command_predict")),
        BotCommand("compare", text("command_compare")),
        BotCommand("quiz", text("command_quiz")),
        BotCommand("language", text("command_language")),
        BotCommand("subscribe", text("command_subscribe")),
        *everywhere[2:],
    ]
    private.append(BotCommand("forget", text("command_forget")))
    await application.bot.set_my_commands(everywhere, scope=BotCommandScopeDefault())
    await application.bot.set_my_commands(private, scope=BotCommandScopeAllPrivateChats())
    mini_app_url = services.settings.mini_app_url
    if mini_app_url:  # the chat's menu button opens the playground (the default chat menu: every private chat)
        button = MenuButtonWebApp(text("menu_playground"), WebAppInfo(mini_app_url))
        await application.bot.set_chat_menu_button(menu_button=button)
