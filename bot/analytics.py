"""What the creator wants to know: how many guides and predictions, for whom, how fast, about what.

``gather_stats`` asks the database for aggregates of the window (counted in SQL, whatever the window holds) and
shapes them; ``render_chart`` draws daily counts per kind as a PNG (matplotlib, Agg backend); ``gather_funnel``
counts, per post, the steps from a keyword comment to the last page and the quiz (``mlm-bot stats --by-post``).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from bot.guides import GuideLibrary
from bot.storage import Repository
from bot.storage.vocabulary import ANSWERED

CHART_KINDS = ("guide", "prediction", "inline", "comment", "start")
OK_OUTCOMES = ANSWERED


@dataclass(frozen=True)
class Stats:
    days: int
    start: datetime
    totals: dict[str, int]
    total_users: int
    guides_sent: int
    predictions: int
    inline_queries: int
    comments: int
    unique_users: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    top_keywords: list[tuple[str, int]]
    top_words: list[tuple[str, int]]
    daily: dict[date, dict[str, int]] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)  # people per chosen language (/language), all time


@dataclass(frozen=True)
class PostFunnel:
    """One post's funnel: what happened under it, then what the people who came by it did (each person counts for
    the post they came by first)."""

    post: str  # "<discussion group>:<thread>", as the comments and deep links name it
    since: datetime | None
    channel_post: str | None = None  # "<channel>:<message>", when the bot saw the post forwarded into the group
    comments: int = 0  # keyword comments under it
    public_replies: int = 0  # commenters it named in a public reply (they had not started the bot)
    dms_opened: int = 0  # people who opened the bot by its deep link
    gate_shown: int = 0  # people asked to join the channel first (REQUIRE_CHANNEL)
    gate_passed: int = 0  # ... who joined
    guide_started: int = 0  # people who got a guide's first page
    guide_finished: int = 0  # ... who reached its last page (or had it whole)
    quiz_finished: int = 0
    predictions: int = 0
    subscriptions: int = 0  # people who asked for new-guide messages (🔔, /subscribe)


async def gather_funnel(
    repo: Repository, guides: GuideLibrary, quiz_questions: int, posts: int = 10
) -> list[PostFunnel]:
    """The ``posts`` newest posts' funnels, counted by the database (three GROUP BY queries)."""
    last_pages: dict[str | None, int] = {g.slug: g.page_count - 1 for g in guides.guides}
    last_pages[None] = guides.default.page_count - 1  # rows from before guides had slugs: the default one's
    rows = await repo.interactions.funnel_by_post(last_pages, quiz_questions, posts=posts)
    return [PostFunnel(**row) for row in rows]


def keyword_of(kind: str, trigger: str | None) -> str | None:
    """The keyword behind a guide or a keyword comment (a deep link counts as one), else None."""
    trigger = trigger or ""
    if kind == "comment":
        return trigger.split(" on ", 1)[0] or None
    if kind == "guide":
        if trigger.startswith("start:"):
            return "deep link"
        return trigger or None
    return None


def _ranked(counts: Iterable[tuple[str, int, int]], limit: int) -> list[tuple[str, int]]:
    """(name, count, first row id) summed per name, most frequent first, ties in order of first appearance."""
    totals: dict[str, list[int]] = {}
    for name, count, first in counts:
        entry = totals.setdefault(name, [0, first])
        entry[0] += count
        entry[1] = min(entry[1], first)
    ordered = sorted(totals.items(), key=lambda item: (-item[1][0], item[1][1]))
    return [(name, count) for name, (count, _) in ordered[:limit]]


async def gather_stats(repo: Repository, *, days: int = 7, now: datetime | None = None) -> Stats:
    """The statistics of the last ``days`` days, counted by the database (GROUP BY, COUNT DISTINCT, the
    (kind, created_at) index): only aggregates come back, never the rows of the window."""
    now = now or datetime.now(timezone.utc)
    start = (now - timedelta(days=days)).astimezone(timezone.utc)
    window = await repo.interactions.aggregate_since(start, percentiles=(50, 95))
    totals, users = await repo.interactions.totals()
    languages = await repo.users.language_choices()
    by_kind: Counter[str] = Counter()
    ok_by_kind: Counter[str] = Counter()
    for (kind, outcome), count in window.by_kind_outcome.items():
        by_kind[kind] += count
        if outcome in OK_OUTCOMES:
            ok_by_kind[kind] += count
    first_day = (now - timedelta(days=days - 1)).astimezone(timezone.utc).date()
    daily = {first_day + timedelta(days=i): dict.fromkeys(CHART_KINDS, 0) for i in range(days)}
    for (day, kind), count in window.daily.items():
        if day in daily and kind in CHART_KINDS:
            daily[day][kind] += count
    keywords = ((keyword_of(kind, trigger), count, first) for kind, trigger, count, first in window.triggers)
    return Stats(
        days=days,
        start=start,
        totals=totals,
        total_users=users,
        guides_sent=ok_by_kind["guide"] + window.by_kind_outcome.get(("comment", "dm"), 0),
        predictions=ok_by_kind["prediction"],
        inline_queries=ok_by_kind["inline"],
        comments=by_kind["comment"],
        unique_users=window.unique_users,
        latency_p50_ms=window.latency_percentiles[50],
        latency_p95_ms=window.latency_percentiles[95],
        top_keywords=_ranked(((k, c, f) for k, c, f in keywords if k), 5),
        top_words=_ranked(window.top_words, 10),
        daily=daily,
        languages=languages,
    )


def render_chart(stats: Stats, title: str) -> bytes:
    """Daily interactions per kind as a stacked bar chart, PNG bytes. CPU work: call it in a thread."""
    figure = chart_figure(stats, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def chart_figure(stats: Stats, title: str):
    """The chart as a matplotlib Figure (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    days = list(stats.daily)
    figure = Figure(figsize=(8, 4.5), dpi=120)
    axes = figure.add_subplot()
    bottom = [0] * len(days)
    positions = list(range(len(days)))  # numbers, labelled below (day names as x values are "categorical units")
    for kind in CHART_KINDS:
        counts = [stats.daily[d][kind] for d in days]
        axes.bar(positions, counts, bottom=bottom, label=kind)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axes.set_xticks(positions, [d.strftime("%b %d") for d in days])
    axes.set_ylim(0, max([*bottom, 0]) * 1.1 or 1)  # an empty week: 0 to 1, not -0.04 to 0.04
    axes.yaxis.get_major_locator().set_params(integer=True)  # counts: whole numbers on the axis
    axes.set_title(title)
    axes.set_ylabel("interactions")
    axes.legend(loc="upper left", fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


# The funnel chart's steps, in order (their labels: strings.txt's funnel_step).
FUNNEL_STEPS = ("comments", "dms_opened", "gate_passed", "guide_started", "guide_finished", "quiz_finished")
FUNNEL_POSTS_CHARTED = 5


def render_funnel_chart(funnels: list[PostFunnel], title: str, label: Callable[[str], str], unit: str,
                        post_name: Callable[[PostFunnel], str]) -> bytes:  # fmt: skip
    """The newest posts' funnels as grouped horizontal bars, one colour per post, PNG bytes. CPU work: in a
    thread."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    shown = funnels[:FUNNEL_POSTS_CHARTED]
    figure = Figure(figsize=(8, 4.5), dpi=120)
    axes = figure.add_subplot()
    height = 0.8 / max(len(shown), 1)
    for i, funnel in enumerate(shown):
        values = [getattr(funnel, step) for step in FUNNEL_STEPS]
        axes.barh([k + i * height for k in range(len(FUNNEL_STEPS))], values, height=height,
                  label=post_name(funnel))  # fmt: skip
    middle = height * (len(shown) - 1) / 2
    axes.set_yticks([k + middle for k in range(len(FUNNEL_STEPS))], [label(step) for step in FUNNEL_STEPS])
    axes.invert_yaxis()  # the funnel reads from the top
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_xlabel(unit)
    axes.set_title(title)
    if shown:
        axes.legend(loc="lower right", fontsize="small")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
