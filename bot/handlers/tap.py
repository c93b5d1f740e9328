"""Tap a word to mask it: a private sentence *without* a mask gets one button per word; the tapped word is hidden
and the model guesses it ("it was X, the model guessed Y, X at rank N").

The sentence is kept under a short random key (the button's data is ``tap:<key>:<n>``, 15 bytes for any
sentence, within Telegram's 64): in memory, and in the database's ``tap_sentences`` so a tap works after a
restart and on the process that took over. A key nobody kept (or kept longer ago than RETENTION_DAYS, or of a
person who used /forget) is answered as an expired button.
"""

from __future__ import annotations

import logging
import re

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from bot.handlers.common import Context, answer_query, log_interaction, visible_message
from bot.handlers.fallback import private_fallback
from bot.handlers.predict import ask_for_button
from bot.services import BotServices
from bot.storage.vocabulary import Kind, Outcome
from models.engine.core import MAX_TOP_K
from models.engine.errors import TargetNotSingleTokenError

log = logging.getLogger(__name__)

PATTERN = r"\Atap:[A-Za-z0-9_-]+:\d+\Z"  # tap:<sentence key>:<word number>, built in the offer's keyboard below

WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")  # letters and digits, with inner apostrophes and hyphens
MAX_BUTTONS = 12
PER_ROW = 4
LONGEST = 300  # characters: a longer text gets the usual hint instead


async def offer_words(update: Update, context: Context) -> None:
    s = context.bot_data.services
    message = update.effective_message
    text = message.text or ""
    words = list(WORD.finditer(text))
    if len(words) < 2 or len(text) > LONGEST:
        await private_fallback(update, context)
        return
    key = s.remember_sentence(text, update.effective_user.id if update.effective_user else None)
    buttons = [
        InlineKeyboardButton(match.group()[:24], callback_data=f"tap:{key}:{n}")
        for n, match in enumerate(words[:MAX_BUTTONS])
    ]
    rows = [buttons[i : i + PER_ROW] for i in range(0, len(buttons), PER_ROW)]
    await message.reply_html(
        s.renderer.html("tap_offer", model_name=s.model_label), reply_markup=InlineKeyboardMarkup(rows)
    )
    await s.keep_sentence(key)


async def tap_button(update: Update, context: Context) -> None:
    s = context.bot_data.services
    query = update.callback_query
    shown = visible_message(update)
    _, key, number = query.data.split(":")
    text = await s.tapped_sentence(key)
    words = list(WORD.finditer(text)) if text else []
    if shown is None or text is None or int(number) >= min(len(words), MAX_BUTTONS):
        await answer_query(update, context)
        await context.bot.send_message(update.effective_chat.id, s.renderer.html("expired"))
        return
    word = words[int(number)]
    hidden = word.group()
    masked = f"{text[: word.start()]}[MASK]{text[word.end() :]}"
    answer = await ask_for_button(update, context, masked, MAX_TOP_K, shown)
    if answer is None:
        return
    guesses = answer.words[0]
    rank = next((n for n, g in enumerate(guesses, start=1) if g["word"].casefold() == hidden.casefold()), None)
    split, score = (None, None) if rank else await _hidden_word_score(s, masked, hidden)
    await shown.reply_html(
        s.renderer.html(
            "tap_result", hidden=hidden, masked=masked, guesses=guesses[:5], rank=rank, top=len(guesses),
            model_name=s.model_label, split=split, score=score,
        )
    )  # fmt: skip
    await log_interaction(
        update, context, Kind.PREDICTION, trigger="tap", input_text=masked, model_name=s.model.model_name,
        predictions=answer.for_log(), outcome=Outcome.OK if rank == 1 else Outcome.MISSED,
    )  # fmt: skip


async def _hidden_word_score(s: BotServices, masked: str, hidden: str) -> tuple[bool | None, float | None]:
    """On a miss: (True, None) if the model's vocabulary splits the hidden word into pieces (so one [MASK] cannot
    hold it), else (False, the probability the model gave it). (None, None) if the model could not say."""
    try:
        result = await s.model.fill_mask(masked, top_k=1, targets=[hidden])
    except TargetNotSingleTokenError:
        return True, None
    except Exception:  # a courtesy line, never a reason to fail the answer
        log.debug("could not score the hidden word", exc_info=True)
        return None, None
    return False, result.masks[0][0].score
