"""What the creator wants to know: how many guides and predictions, for whom, how fast, about what.

``compute_stats`` is a pure function of the logged rows (so tests can check it against hand-computed numbers);
``gather_stats`` reads them; ``render_chart`` draws daily counts per kind as a PNG (matplotlib, Agg backend).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from bot.storage import Repository
from bot.storage.tables import Interaction

CHART_KINDS = ("guide", "prediction", "inline", "comment", "start")


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


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite returns naive UTC


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): an actual observed latency, no interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return ordered[int(rank) - 1]


def _keyword(row: Interaction) -> str | None:
    trigger = row.trigger or ""
    if row.kind == "comment":
        return trigger.split(" on ", 1)[0] or None
    if row.kind == "guide":
        if trigger.startswith("start:"):
            return "deep link"
        return trigger or None
    return None


def compute_stats(
    rows: Iterable[Interaction], totals: dict[str, int], total_users: int, *, now: datetime, days: int
) -> Stats:
    start = (now - timedelta(days=days)).astimezone(timezone.utc)
    recent = [r for r in rows if _aware(r.created_at) >= start]
    ok = [r for r in recent if r.outcome in ("ok", "dm", "button")]
    latencies = [r.latency_ms for r in ok if r.kind == "prediction" and r.latency_ms is not None]
    first_day = (now - timedelta(days=days - 1)).astimezone(timezone.utc).date()
    daily = {first_day + timedelta(days=i): dict.fromkeys(CHART_KINDS, 0) for i in range(days)}
    for r in recent:
        day = _aware(r.created_at).date()
        if day in daily and r.kind in CHART_KINDS:
            daily[day][r.kind] += 1
    return Stats(
        days=days,
        start=start,
        totals=totals,
        total_users=total_users,
        guides_sent=sum(1 for r in ok if r.kind == "guide" or (r.kind == "comment" and r.outcome == "dm")),
        predictions=sum(1 for r in ok if r.kind == "prediction"),
        inline_queries=sum(1 for r in ok if r.kind == "inline"),
        comments=sum(1 for r in recent if r.kind == "comment"),
        unique_users=len({r.user_id for r in recent if r.user_id is not None}),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        top_keywords=Counter(k for r in recent if (k := _keyword(r))).most_common(5),
        top_words=Counter(r.top_prediction for r in ok if r.top_prediction).most_common(10),
        daily=daily,
    )


async def gather_stats(repo: Repository, *, days: int = 7, now: datetime | None = None) -> Stats:
    now = now or datetime.now(timezone.utc)
    rows = await repo.interactions.since(now - timedelta(days=days))
    totals, users = await repo.interactions.totals()
    return compute_stats(rows, totals, users, now=now, days=days)


def render_chart(stats: Stats, title: str) -> bytes:
    """Daily interactions per kind as a stacked bar chart, PNG bytes. CPU work: call it in a thread."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    days = list(stats.daily)
    figure = Figure(figsize=(8, 4.5), dpi=120)
    axes = figure.add_subplot()
    bottom = [0] * len(days)
    for kind in CHART_KINDS:
        counts = [stats.daily[d][kind] for d in days]
        axes.bar([d.strftime("%b %d") for d in days], counts, bottom=bottom, label=kind)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axes.set_title(title)
    axes.set_ylabel("interactions")
    axes.legend(loc="upper left", fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
