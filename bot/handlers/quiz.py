"""The quiz: ``/quiz`` or the "🧠 Test yourself" button, questions as Telegram quiz polls, one at a time (the last
one answered by the live model: the person guesses its first word, then sees its list).

Each poll is non-anonymous, so Telegram sends the bot a ``poll_answer`` update when the person answers (it shows
them right or wrong and the explanation itself); the bot logs the answer and sends the next question, then the
score. The quiz in progress is kept by poll id in memory and in the database's ``quiz_runs`` (through the
writer), so it goes on after a restart and on the process that took over; an answer to a poll nobody kept (older
than a day, or forgotten) gets a line saying so, and ``/quiz`` starts afresh.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from telegram import InputPollOption, Update
from telegram.error import TelegramError

from bot.handlers.common import Context, answer_query, log_interaction
from bot.logs import update_began_at
from bot.services import BotServices
from bot.storage.vocabulary import Kind, Outcome
from bot.storage.writes import QuizAsked, QuizEnded
from bot.text.render import percent, shorten

log = logging.getLogger(__name__)

DATA = "quiz"  # the "Test yourself" button (under Try it live and the guide's last page)
PATTERN = r"\Aquiz\Z"


@dataclass
class QuizRun:
    user_id: int
    chat_id: int
    question: int = 0
    right: int = 0
    poll_id: str | None = None  # the poll waiting for an answer


async def quiz_command(update: Update, context: Context) -> None:
    await _start(context, update.effective_chat.id, update.effective_user.id)


async def quiz_button(update: Update, context: Context) -> None:
    await answer_query(update, context)
    if update.effective_chat is not None:
        await _start(context, update.effective_chat.id, update.effective_user.id)


async def _start(context: Context, chat_id: int, user_id: int) -> None:
    s = context.bot_data.services
    questions = s.renderer.quiz()
    await context.bot.send_message(chat_id, s.renderer.html("quiz_intro", count=len(questions)))
    await _ask(context, QuizRun(user_id=user_id, chat_id=chat_id))


LIVE_CHOICES = 4  # the live question's options: the model's top words


async def _resolved(s: BotServices, question: dict[str, Any]) -> dict[str, Any] | None:
    """The question as asked. One with "live" is answered by the model the bot runs: the options are its top words
    for the sentence (alphabetical, so the first is not always right), the right one its first guess, and the
    explanation lists its guesses. The model is deterministic, so asking again (when the answer comes, maybe on
    another process) gives the same right option. None if the model cannot answer now."""
    if "live" not in question:
        return question
    try:
        result = await s.model.fill_mask(question["live"], top_k=LIVE_CHOICES, words_only=True)
    except Exception:
        log.warning("the quiz's live question could not be asked (the model did not answer)", exc_info=True)
        return None
    guesses = [(p.token_str.strip(), p.score) for p in result.masks[0]]
    options = sorted(dict.fromkeys(word for word, _ in guesses if word))
    if len(options) < 2:
        return None
    listed = ", ".join(f"{word} {percent(score)}" for word, score in guesses)
    return {
        "question": question["question"],
        "options": options,
        "correct": options.index(guesses[0][0]),
        "explanation": shorten(question["explanation"].format(guesses=listed), 200),
    }


async def _ask(context: Context, run: QuizRun) -> None:
    s = context.bot_data.services
    questions = s.renderer.quiz()
    question = await _resolved(s, questions[run.question])
    while question is None and run.question + 1 < len(questions):  # the model away: on to the next question
        run.question += 1
        question = await _resolved(s, questions[run.question])
    if question is None:
        await _score(context, run, len(questions), run.poll_id)
        return
    # Plain text, not the HTML the bot's Defaults would apply: "<mask>" is RoBERTa's mask, not a tag.
    message = await context.bot.send_poll(
        run.chat_id,
        question["question"],
        [InputPollOption(option, text_parse_mode=None) for option in question["options"]],
        is_anonymous=False,  # or Telegram would not say who answered
        type="quiz",
        correct_option_ids=[question["correct"]],
        explanation=question["explanation"],
        question_parse_mode=None,
        explanation_parse_mode=None,
    )
    previous, run.poll_id = run.poll_id, message.poll.id
    context.bot_data.quizzes[message.poll.id] = run  # a capped cache: the database keeps them all for a day
    await s.log(
        QuizAsked(message.poll.id, run.user_id, run.chat_id, run.question, run.right, previous, update_began_at())
    )


async def _find(context: Context, poll_id: str) -> QuizRun | None:
    """The quiz waiting on this poll: in memory, or (after a restart, on another process) in the database."""
    run = context.bot_data.quizzes.pop(poll_id, None)
    if run is not None:
        return run
    try:
        row = await context.bot_data.services.repo.state.quiz(poll_id)
    except Exception:  # the database away: answered as a quiz from before, not as an error
        return None
    if row is None:
        return None
    return QuizRun(row.user_id, row.chat_id, row.question, row.right, row.poll_id)


async def poll_answer(update: Update, context: Context) -> None:
    s = context.bot_data.services
    answer = update.poll_answer
    if answer.user is None:
        return
    questions = s.renderer.quiz()
    run = await _find(context, answer.poll_id)
    if run is None or run.question >= len(questions):  # nobody kept it (a day old, forgotten), or the quiz changed
        # The quiz is sent in private chats: the person's chat is their id.
        with contextlib.suppress(TelegramError):
            await context.bot.send_message(answer.user.id, s.renderer.html("quiz_lost"))
        return
    if answer.user.id != run.user_id:  # not theirs (quizzes are sent in private chats: should not happen)
        context.bot_data.quizzes[answer.poll_id] = run
        return
    question = await _resolved(s, questions[run.question])
    right = question is not None and list(answer.option_ids) == [question["correct"]]
    run.right += right
    await log_interaction(
        update, context, Kind.QUIZ, trigger=f"q{run.question + 1}", input_text=questions[run.question]["question"],
        outcome=Outcome.RIGHT if right else Outcome.WRONG,
    )  # fmt: skip
    run.question += 1
    if run.question < len(questions):
        await _ask(context, run)
        return
    await _score(context, run, len(questions), answer.poll_id)


async def _score(context: Context, run: QuizRun, total: int, poll_id: str | None) -> None:
    s = context.bot_data.services
    keyword = s.guides.default.keywords[0]
    await context.bot.send_message(
        run.chat_id, s.renderer.html("quiz_score", right=run.right, total=total, keyword=keyword)
    )
    if poll_id is not None:
        await s.log(QuizEnded(poll_id, datetime.now(timezone.utc)))
