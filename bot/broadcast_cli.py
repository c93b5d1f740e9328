"""``mlm-bot broadcast``: a message to the people who asked for new-guide messages, and only to them.

This command queues the broadcast in the database (a row per subscriber, in one statement) and shows its progress;
the running bot's active process sends it (``bot.broadcaster``), paced and behind its own answers, and goes on
after a restart. ``--status`` and ``--cancel`` work on the newest broadcast, or the one named.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from bot.config import GuideSettings, database_url
from bot.storage import Database, Repository
from bot.storage.broadcasts import Progress
from bot.storage.database import SchemaOutOfDate

MAX_CHARS = 4000  # Telegram takes 4096; the rest is room for nothing else
WATCH_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-file", type=Path, metavar="FILE", help="the message, plain text (UTF-8)")
    parser.add_argument("--guide", metavar="SLUG", help="a guide's button under the message")
    parser.add_argument("--dry-run", action="store_true", help="say who it would reach and what it says; send nothing")
    parser.add_argument("--yes", action="store_true", help="do not ask before sending")
    parser.add_argument("--watch", action="store_true", help="show its progress until done (default in a terminal)")
    parser.add_argument("--status", nargs="?", const=0, type=int, metavar="ID", help="how a broadcast stands")
    parser.add_argument("--cancel", nargs="?", const=0, type=int, metavar="ID", help="stop a broadcast")


def _line(progress: Progress) -> str:
    counts = ", ".join(f"{state} {count}" for state, count in sorted(progress.counts.items()))
    return f"broadcast {progress.broadcast_id}: {progress.state} ({counts or 'nobody'}; {progress.left} left)"


def cmd_broadcast(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_broadcast(args))
    except SchemaOutOfDate as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


async def _broadcast(args: argparse.Namespace) -> int:
    database = Database(database_url())
    try:
        await database.require_current()  # the bot migrates; this command never does
        broadcasts = Repository(database).broadcasts
        if args.status is not None or args.cancel is not None:
            which = (args.status if args.status is not None else args.cancel) or None
            progress = await (broadcasts.progress(which) if args.cancel is None else broadcasts.cancel(which))
            print(_line(progress) if progress else "no broadcast yet")
            return 0 if progress else 1
        if args.text_file is None:
            print("error: --text-file FILE (the message), or --status / --cancel", file=sys.stderr)
            return 2
        text = args.text_file.read_text(encoding="utf-8").strip()
        if not text or len(text) > MAX_CHARS:
            print(f"error: the message must be 1 to {MAX_CHARS} characters (it is {len(text)})", file=sys.stderr)
            return 2
        if args.guide and not _guide_exists(args.guide):
            print(f"error: no guide {args.guide!r} (mlm-bot guides list)", file=sys.stderr)
            return 2
        count = await broadcasts.subscribers()
        print(f"{count} people asked for new-guide messages; the message:\n---\n{text}\n---")
        if args.dry_run or count == 0:
            print("dry run: nothing sent" if args.dry_run else "nobody to send it to")
            return 0
        question = f"Send it to {count} people? [y/N] "
        if not args.yes and (await asyncio.to_thread(input, question)).strip().lower() not in ("y", "yes"):
            print("not sent")
            return 1
        broadcast_id, queued = await broadcasts.create(text, args.guide)
        print(f"broadcast {broadcast_id} queued for {queued} people: the running bot sends it (see --status)")
        if args.watch or sys.stdout.isatty():
            await _watch(broadcasts, broadcast_id)
        return 0
    finally:
        await database.close()


def _guide_exists(slug: str) -> bool:
    from bot.guides.commands import load_for

    return load_for(GuideSettings(), check_pages=False).get(slug) is not None


async def _watch(broadcasts, broadcast_id: int) -> None:
    """A progress bar until it is done (Ctrl+C stops watching, not the broadcast)."""
    from tqdm import tqdm

    progress = await broadcasts.progress(broadcast_id)
    started = time.monotonic()
    with tqdm(total=progress.total, unit="msg", desc=f"broadcast {broadcast_id}") as bar:
        try:
            while progress.state == "sending":
                await asyncio.sleep(WATCH_S)
                progress = await broadcasts.progress(broadcast_id)
                bar.n = progress.total - progress.left
                bar.refresh()
        except KeyboardInterrupt:
            pass
    print(_line(progress), f"after {time.monotonic() - started:.0f} s")
