"""What ``/healthz`` checks: updates flowing (polling answered lately, or the webhook as Telegram reports it), the
database reachable, the model ready; and while the bot starts, what it is waiting for."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bot.storage import Database
from bot.storage.leader import Leadership
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
    stopping: bool = False  # the stop has come: no new updates, the ones in progress finishing
    # What the start is waiting for right now (bot.runner sets it), so /healthz names it instead of guessing.
    phase: str = "waiting for Telegram to answer getMe"
    model_started: bool = False  # the model's load has begun (before, its check says what comes first)
    last_poll: float | None = None  # monotonic time of the last getUpdates answer (polling mode)
    webhook_problem: str | None = None  # what Telegram's getWebhookInfo last reported wrong (webhook mode)
    leader: Leadership | None = None  # a standby asks it who is active (bot.storage.leader)
    active_process: str | None = None  # who that is, as it last answered

    @property
    def serving(self) -> bool:
        """This process is the active one and takes updates in (not starting, standing by or stopping)."""
        return self.started and not self.stopping

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def updates(self) -> str | None:
        if self.standby:  # healthy: it takes over when needed (and in webhook mode stores what it is sent)
            return None
        if self.stopping:
            return "stopping: no new updates; finishing the ones in progress"
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

        async def active() -> str | None:
            """A standby is healthy while another process holds the lock; with none holding it, nobody answers."""
            if not self.standby or self.leader is None:
                return None
            try:
                holder = await asyncio.wait_for(self.leader.holder(), CHECK_TIMEOUT_S)
            except Exception as exc:
                return f"standby, and cannot tell whether any process is active ({type(exc).__name__})"
            self.active_process = holder
            return None if holder else "standby, and no process holds the active lock: nobody is answering"

        db_problem, model_problem, active_problem = await asyncio.gather(database(), model(), active())
        problems = {"updates": self.updates() or active_problem, "database": db_problem, "model": model_problem}
        checks = {name: problem or "ok" for name, problem in problems.items()}
        if self.standby and active_problem is None:
            checks["updates"] = f"standby: another process on this database is active ({self.active_process})"
        return all(problem is None for problem in problems.values()), checks
