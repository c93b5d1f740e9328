"""What ``/healthz`` checks: updates flowing (polling answered lately, or the webhook as Telegram reports it), the
database reachable, the model ready; and while the bot starts, what it is waiting for."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bot.storage import Database
from models.serving.client import FillMaskService

POLL_STALE_S = 60.0  # a long poll returns every 10 s or sooner; a minute without one means polling is stuck
CHECK_TIMEOUT_S = 3.0


@dataclass
class Health:
    """What ``/healthz`` checks: updates flowing, the database reachable, the model ready."""

    database: Database
    model: FillMaskService
    webhook: bool
    started: bool = False  # the bot is taking updates (set when polling or the webhook starts)
    standby: bool = False  # ready, waiting for the active process on the same database to stop (bot.storage.leader)
    # What the start is waiting for right now (bot.runner sets it), so /healthz names it instead of guessing.
    phase: str = "waiting for Telegram to answer getMe"
    model_started: bool = False  # the model's load has begun (before, its check says what comes first)
    last_poll: float | None = None  # monotonic time of the last getUpdates answer (polling mode)
    webhook_problem: str | None = None  # what Telegram's getWebhookInfo last reported wrong (webhook mode)

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def updates(self) -> str | None:
        if self.standby:  # healthy: it takes over when needed (and in webhook mode stores what it is sent)
            return None
        if not self.started:
            return f"starting: {self.phase}"
        if self.webhook:
            return self.webhook_problem
        if self.last_poll is None or time.monotonic() - self.last_poll > POLL_STALE_S:
            ago = "never" if self.last_poll is None else f"{time.monotonic() - self.last_poll:.0f} s ago"
            return f"no answer from Telegram's getUpdates since {ago}"
        return None

    async def check(self) -> tuple[bool, dict[str, str]]:
        async def database() -> str | None:
            try:
                await asyncio.wait_for(self.database.ping(), CHECK_TIMEOUT_S)
            except Exception as exc:
                return f"unreachable ({type(exc).__name__})"
            return None

        async def model() -> str | None:
            if not self.model_started:
                return f"not loaded yet: {self.phase} first"
            try:
                return await asyncio.wait_for(self.model.ready(), CHECK_TIMEOUT_S)
            except Exception as exc:
                return f"no answer ({type(exc).__name__})"

        db_problem, model_problem = await asyncio.gather(database(), model())
        problems = {"updates": self.updates(), "database": db_problem, "model": model_problem}
        checks = {name: problem or "ok" for name, problem in problems.items()}
        if self.standby:
            checks["updates"] = "standby: another process on this database is active"
        return all(problem is None for problem in problems.values()), checks
