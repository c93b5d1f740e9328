"""The words the interaction log is written in: what a row is about (its kind) and how it ended (its outcome).

They are strings in the database (``interactions.kind``, ``interactions.outcome``), so each enum member *is* its
string: rows, CSV exports and ``/stats`` read the same whether a value was written as ``Kind.GUIDE`` or as
``"guide"``. Outcomes are an open set (a refused prediction logs the engine's error code, an error the
exception's name); the ones the bot itself names are here.
"""

from __future__ import annotations

import enum


class _Word(str, enum.Enum):
    """A member that prints, formats and compares as its value (``f"{Kind.GUIDE}"`` is ``guide``)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Kind(_Word):
    START = "start"
    GUIDE = "guide"  # the lesson begun (or the whole guide sent, by an older path)
    PLAYGROUND = "playground"  # a request from the playground Mini App (trigger: fill-mask or compare)
    LESSON = "lesson"  # a step through the lesson: a page, all at once, the .md file, the live experiments
    PREDICTION = "prediction"
    CHART = "chart"
    INLINE = "inline"
    COMMENT = "comment"
    COMPARE = "compare"
    QUIZ = "quiz"
    LANGUAGE = "language"
    FOLLOW = "follow"  # asked for new-guide messages ("on") or stopped them ("off")
    GATE = "gate"  # the follow-gate (REQUIRE_CHANNEL): asked to join ("shown"), joined ("passed")
    RELOAD = "reload"  # an admin read the guides again (/reload)
    LIMIT = "limit"
    ERROR = "error"


class Outcome(_Word):
    OK = "ok"
    DM = "dm"  # a keyword comment answered by DM
    BUTTON = "button"  # a keyword comment answered publicly, with a button to the bot
    MISSED = "missed"  # tap-to-mask: the model's first guess was not the hidden word
    RIGHT = "right"
    WRONG = "wrong"
    TIMEOUT = "timeout"
    OVER_BUDGET = "over_budget"
    REPLY_FAILED = "reply_failed"
    THREAD_GONE = "thread_gone"
    GATED = "gated"  # a guide asked for, the follow-gate's message sent instead (REQUIRE_CHANNEL)


# Outcomes of a request that got its answer (what /stats counts as answered, and times).
ANSWERED = (Outcome.OK, Outcome.DM, Outcome.BUTTON)
