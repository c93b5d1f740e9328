"""``mlm-bot``: the one command line of the project.

Subcommands import what they need when they run, so ``mlm-bot --help`` answers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from models.engine.errors import FillMaskError

log = logging.getLogger("mlm_bot")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The ones that may load a model (`run` sets its bars itself, once its settings are checked: a missing token is
# reported before transformers is imported).
MODEL_COMMANDS = ("worker", "serve", "predict", "bench", "playground")
DATABASE_COMMANDS = ("db", "stats", "export", "broadcast")  # an unreachable database is one line for these
SERVER_COMMANDS = ("run", "worker", "serve", "playground", "bench")  # they log at INFO unless told otherwise


def _setup_logging(level: str, log_format: str = "text") -> None:
    from bot.logs import UpdateFields, formatter, quiet_libraries

    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))  # never prints the bot token, whichever format
    handler.addFilter(UpdateFields())  # update id, a pseudonym of the person, chat type while handling one
    logging.basicConfig(level=level, handlers=[handler])
    # httpx logs request URLs (with the token), python-telegram-bot whole updates at DEBUG (bot.runner repeats it).
    quiet_libraries(_setting("LOG_UPDATES", "").strip().lower() in ("1", "true", "yes"))
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # Alembic says which migration runs (worth a line); its set-up chatter is not.
    logging.getLogger("alembic.runtime.migration").addFilter(
        lambda record: not str(record.msg).startswith(("Context impl", "Will assume"))
    )
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


def _progress_bars(show: bool) -> None:
    """Hugging Face's download and "Loading weights" bars follow the log level: shown at INFO and DEBUG, quiet
    from WARNING up (a worker in a container at WARNING should not draw bars into its log)."""
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    if show:
        hf_logging.enable_progress_bar()
        hub_utils.enable_progress_bars()
    else:
        hf_logging.disable_progress_bar()
        hub_utils.disable_progress_bars()


def _model_settings(args: argparse.Namespace):
    from models.settings import ModelSettings

    overrides = {}
    if getattr(args, "model", None):
        overrides["model_name"] = args.model
    if getattr(args, "device", None):
        overrides["model_device"] = args.device
    return ModelSettings(**overrides)


def cmd_worker(args: argparse.Namespace) -> int:
    import uvicorn

    from models.serving.http_worker import create_app, warn_if_open

    settings = _model_settings(args)
    warn_if_open(args.host, settings)
    server: uvicorn.Server | None = None

    def stop_on_load_failure() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=stop_on_load_failure)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level.lower(),
        access_log=False,
        log_config=None,  # uvicorn's lines go through the root handler: LOG_FORMAT applies to them too
    )
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM, then raises the signal again; once drained, that is a clean exit (0).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    load_error = app.state.worker.load_error
    if load_error:
        print(f"error: {load_error}", file=sys.stderr)
        return 1  # a supervisor (compose's restart:, systemd, Kubernetes) starts the worker again
    return 0


def cmd_playground(args: argparse.Namespace) -> int:
    """The playground page (``bot.http.playground``) with the model in this process, no Telegram needed: on
    127.0.0.1 by default. Another address needs --allow-remote and a bot token, and then asks every request for a
    Mini App's signed initData (nobody else can use the model through it)."""
    import ipaddress

    import uvicorn

    from bot.config import PlaygroundSettings

    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    overrides = {k: v for k, v in (("model_name", args.model), ("model_device", args.device)) if v}
    settings = PlaygroundSettings(**overrides)
    token = settings.telegram_bot_token.get_secret_value().strip() if settings.telegram_bot_token else ""
    if not loopback and not (args.allow_remote and token):
        print(
            f"error: {args.host} is not this machine only: the playground would let anyone there use the model. "
            "Keep the default (127.0.0.1), or pass --allow-remote with TELEGRAM_BOT_TOKEN set (then only a Telegram "
            "Mini App's signed requests are answered).",
            file=sys.stderr,
        )
        return 2
    from models.serving.client import engine_from

    try:  # before serving: a model that cannot load is one line, and no address is printed for nothing
        engine = engine_from(settings)
    except (OSError, ValueError) as exc:  # ModelLoadError is main()'s one line too
        print(f"error: {exc}", file=sys.stderr)
        return 1
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/app"

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # listening now (a port already taken ends the server instead)
                print(f"the playground: {url} (Ctrl-C stops it)", flush=True)

    from bot.http.playground import standalone_app

    app = standalone_app(settings, _renderer(), engine, token=None if loopback else token)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False, log_config=None
    )
    server = Server(config)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # uvicorn drains, then exits 0
    server.run()
    return 0 if server.started else 1


def cmd_serve(args: argparse.Namespace) -> int:
    """The worker's API on Ray Serve (``models.serving.ray_serve``): a local Ray instance, or the cluster at
    ``--address``/``RAY_ADDRESS``; runs until SIGTERM or Ctrl-C, then takes the application down."""
    try:
        import ray
        from ray import serve
    except ImportError:
        print('error: Ray Serve is not installed: pip install "mlm-bot[ray]"', file=sys.stderr)
        return 2
    import threading

    from models.serving.http_worker import warn_if_open
    from models.serving.ray_serve import APP_NAME, build

    settings = _model_settings(args)
    warn_if_open(args.host, settings, "Ray Serve's proxy")
    ray.init(address=args.address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        app = build(
            settings,
            replicas=args.replicas,
            max_replicas=args.max_replicas,
            gpus_per_replica=args.gpus_per_replica,
            cpus_per_replica=args.cpus_per_replica,
        )
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        log.info("Ray Serve: %s on http://%s:%d/v1/fill-mask", settings.model_name, args.host, args.port)
        stop.wait()
        log.info("stopping: taking the Serve application down")
        serve.delete(APP_NAME)
    finally:
        # Never serve.shutdown(): on a cluster this joined, it would delete every other Serve application and the
        # HTTP proxies too. A local instance started here goes down with ray.shutdown(), Serve with it.
        ray.shutdown()
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from models.serving.client import create_fill_mask_service

    settings = _model_settings(args)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None

    async def predict():
        service = create_fill_mask_service(settings)
        await service.start()
        try:
            result = await service.fill_mask(args.text, top_k=args.top_k, targets=targets)
            joint = None
            if len(result.masks) > 1 and not args.json:
                joint = await service.fill_joint(args.text, targets=targets)
            return result, joint
        finally:
            await service.close()

    try:
        result, joint = asyncio.run(predict())
    except FillMaskError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_hf(), ensure_ascii=False, indent=2))
        return 0
    print(_table(result, joint))
    return 0


def _table(result, joint) -> str:
    lines = []
    for n, mask in enumerate(result.masks, start=1):
        if len(result.masks) > 1:
            lines.append(f"Mask {n} of {len(result.masks)}")
        width = max(len(p.token_str) for p in mask)
        for rank, p in enumerate(mask, start=1):
            bar = "█" * max(1, round(p.score * 20)) if p.score >= 0.025 else "▏"
            lines.append(f"{rank:>3}  {p.token_str:<{width}}  {p.score * 100:6.2f}%  {bar}")
        lines.append(f"     → {mask[0].sequence}")
        lines.append("")
    if joint is not None:
        lines.append(f"Best sentence (masks filled one at a time): {joint.sequence}")
    if result.truncated:
        lines.append("(the text was long: the model read only the part around the masks)")
    return "\n".join(lines).rstrip()


def cmd_run(args: argparse.Namespace) -> int:
    from bot.config import SettingsError, load_settings

    try:  # before torch and transformers are imported: a missing token is reported in a fraction of a second
        settings = load_settings()
    except SettingsError as exc:
        return _config_error(str(exc))
    _progress_bars(logging.getLogger().getEffectiveLevel() <= logging.INFO)
    from bot.runner import StartupError, run

    try:
        run(settings)
    except StartupError as exc:
        return _config_error(str(exc))
    return 0


def _config_error(problem: str) -> int:
    """A setting the bot cannot start with: exit 2, or with ON_CONFIG_ERROR=wait (in a container) say so on /healthz
    and wait for a stop (``bot.http.misconfigured``)."""

    from pydantic import ValidationError

    from bot.config import HealthSettings

    print(f"error: {problem}", file=sys.stderr)
    try:
        health = HealthSettings()
    except ValidationError:  # the listening settings are what is wrong: wait all the same, without /healthz
        wait, address = os.environ.get("ON_CONFIG_ERROR", "").strip().lower() == "wait", None
    else:
        wait, address = health.on_config_error == "wait", health.health_address()
    if not wait:
        return 2
    from bot.http.misconfigured import wait_misconfigured

    return asyncio.run(wait_misconfigured(" / ".join(problem.splitlines()), address))


def cmd_health(args: argparse.Namespace) -> int:
    """Asks the running bot (or, with --url, a worker) whether it is healthy: exit 0 if so, else 1. Docker's
    healthchecks run this inside the container."""
    import httpx

    from bot.config import HealthSettings

    url = args.url or HealthSettings().healthz_url()
    if url is None:
        print("error: METRICS_PORT=0: the bot serves no /healthz (set METRICS_PORT, or pass --url)", file=sys.stderr)
        return 2
    try:
        response = httpx.get(url, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"unhealthy: no answer from {url} ({type(exc).__name__})")
        return 1
    print(f"{'healthy' if response.status_code == 200 else 'unhealthy'}: {response.text.strip()}")
    return 0 if response.status_code == 200 else 1


def cmd_db_backup(args: argparse.Namespace) -> int:
    """A consistent copy of the SQLite interaction log while the bot runs (SQLite's online backup: the bot keeps
    writing meanwhile, and the copy is a complete database, not a file copied halfway through a write)."""
    import sqlite3
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from bot.config import database_url

    url = make_url(database_url())
    if url.get_backend_name() != "sqlite" or not url.database:
        print("error: db backup copies an SQLite file; for PostgreSQL use pg_dump", file=sys.stderr)
        return 2
    source_path, target = Path(url.database), Path(args.file)
    if not source_path.is_file():
        print(f"error: no database at {source_path.resolve()}", file=sys.stderr)
        return 2
    if target.exists():
        print(f"error: {target} exists; give a new file name", file=sys.stderr)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(source_path, timeout=30)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    print(f"backed up {source_path.resolve()} to {target.resolve()}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from alembic.util import CommandError

    from bot.config import database_url
    from bot.storage.database import upgrade

    url = database_url()
    try:
        upgrade(url, args.revision)
    except CommandError as exc:  # an unknown or ambiguous revision
        print(f"error: db upgrade {args.revision}: {exc}", file=sys.stderr)
        return 2
    print(f"database {_without_password(url)} is at revision {args.revision}")
    return 0


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_stats(args: argparse.Namespace) -> int:
    from bot.analytics import gather_funnel, gather_stats, render_chart, render_funnel_chart
    from bot.config import GuideSettings, database_url
    from bot.guides import GuideProblems
    from bot.guides.commands import load_for
    from bot.storage import Database, Repository
    from bot.storage.database import SchemaOutOfDate
    from bot.text.telegram_html import visible_text

    renderer = _renderer()

    async def collect():
        database = Database(database_url())
        try:
            await database.require_current()  # read-only: never migrates
            if args.by_post:  # the guides' page counts tell which page is the last
                guides = load_for(GuideSettings(), check_pages=False)
                return await gather_funnel(Repository(database), guides, len(renderer.quiz()), posts=args.posts)
            return await gather_stats(Repository(database), days=args.since)
        finally:
            await database.close()

    try:
        stats = asyncio.run(collect())
    except SchemaOutOfDate as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GuideProblems as exc:
        print(f"error: the guides have problems (mlm-bot guides check): {exc.problems[0]}", file=sys.stderr)
        return 2
    if args.by_post:
        if args.json:
            print(json.dumps([dataclasses.asdict(f) for f in stats], default=str, indent=1))
        else:
            print(visible_text(renderer.html("stats_posts", funnels=stats)))
        if args.png:
            with open(args.png, "wb") as out:
                label = lambda step: renderer.text("funnel_step", step=step)  # noqa: E731
                name = lambda f: renderer.text("funnel_post", channel_post=f.channel_post, post=f.post)  # noqa: E731
                title, unit = renderer.text("funnel_chart_title"), renderer.text("funnel_unit")
                out.write(render_funnel_chart(stats, title, label, unit, name))
            print(f"\nchart written to {args.png}", file=sys.stderr if args.json else sys.stdout)
        return 0
    print(visible_text(renderer.html("stats", s=stats)))
    if args.png:
        with open(args.png, "wb") as out:
            out.write(render_chart(stats, renderer.text("chart_title", days=args.since)))
        print(f"\nchart written to {args.png}")
    return 0


def _renderer():
    """The bot's words as ``mlm-bot run`` has them: MLM_BOT_TEMPLATES and CREATOR_GENDER from .env too."""
    from bot.config import GuideSettings
    from bot.text.render import Renderer

    settings = GuideSettings()
    return Renderer(settings.mlm_bot_templates, creator_gender=settings.creator_gender)


def cmd_export(args: argparse.Namespace) -> int:
    from bot.config import database_url
    from bot.export import export
    from bot.storage.database import SchemaOutOfDate

    try:
        count = export(database_url(), args.format, args.output, since_days=args.since)
    except SchemaOutOfDate as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{count} interactions written to {args.output or 'stdout'}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from models.bench.benchmark import main as bench_main

    return bench_main(args)


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days") from None
    if days < 1:
        raise argparse.ArgumentTypeError(f"{value} days: give 1 or more")
    return days


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _setting(name: str, default: str) -> str:
    """A setting the command line needs before the settings object exists: the environment, then ``.env``
    (where every other setting may come from as well)."""
    if os.environ.get(name):
        return os.environ[name]
    from dotenv import dotenv_values

    return dotenv_values(".env").get(name) or default


def _log_format(value: str) -> str:
    from bot.logs import LOG_FORMATS

    kind = value.strip().lower()
    if kind not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(LOG_FORMATS)}")
    return kind


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own_version = version("mlm-bot")
    except PackageNotFoundError:  # a source checkout that was never installed
        own_version = "unknown"
    # --log-level is accepted before and after the subcommand (mlm-bot --log-level DEBUG run, mlm-bot run
    # --log-level DEBUG): the subcommands share it through a parent parser that sets nothing unless given.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", type=_log_level, default=argparse.SUPPRESS, help=", ".join(LOG_LEVELS))
    common.add_argument("--log-format", type=_log_format, default=argparse.SUPPRESS, help="text or json")
    parser = argparse.ArgumentParser(
        prog="mlm-bot", description="MLM Bot: a Telegram bot that teaches masked language models."
    )
    parser.add_argument("--version", action="version", version=f"mlm-bot {own_version}")
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default=_setting("LOG_LEVEL", "") or None,
        help=f"{', '.join(LOG_LEVELS)} (default: LOG_LEVEL, else INFO for the servers (run, worker, serve, "
        "playground, bench) and WARNING for one-shot commands)",
    )
    parser.add_argument(
        "--log-format",
        type=_log_format,
        default=_setting("LOG_FORMAT", "text"),
        help="text, or json for log shippers: one object a line (default: LOG_FORMAT or text)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    run = add("run", help="run the Telegram bot (long polling, or a webhook when WEBHOOK_URL is set)")
    run.set_defaults(func=cmd_run)

    health = add("health", help="ask the running bot's /healthz (exit 0 when healthy): for Docker's healthcheck")
    health.add_argument("--url", help="another address, e.g. a worker's http://127.0.0.1:8000/readyz")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    health.set_defaults(func=cmd_health)

    db = add("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", parents=[common], help="apply the migrations (start-up does this too)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=cmd_db_upgrade)
    backup = db_sub.add_parser("backup", parents=[common], help="copy the SQLite log safely while the bot runs")
    backup.add_argument("file", help="where the copy goes, e.g. data/backup-2026-11-28.sqlite3")
    backup.set_defaults(func=cmd_db_backup)

    from bot.broadcast_cli import add_arguments as add_broadcast_arguments
    from bot.broadcast_cli import cmd_broadcast
    from bot.guides.commands import add_arguments as add_guides_arguments

    broadcast = add("broadcast", help="a message to the people who asked for new-guide messages (the bot sends it)")
    add_broadcast_arguments(broadcast)
    broadcast.set_defaults(func=cmd_broadcast)

    guides = add("guides", help="the guides: list them, start a new one, check what Telegram would refuse")
    add_guides_arguments(guides, common)

    stats = add("stats", help="usage statistics of the bot (what /stats shows admins)")
    stats.add_argument("--since", type=_days, default=7, metavar="DAYS", help="the last DAYS days (default 7)")
    stats.add_argument("--png", metavar="FILE", help="also draw the daily counts per kind to this PNG file")
    stats.add_argument(
        "--by-post", action="store_true", help="per post: comments, replies, bot opened, gate, guide, quiz, predictions"
    )
    stats.add_argument("--posts", type=_days, default=10, metavar="N", help="with --by-post: the N newest (default 10)")
    stats.add_argument("--json", action="store_true", help="with --by-post: JSON instead of text")
    stats.set_defaults(func=cmd_stats)

    export = add("export", help="write the logged interactions as CSV or JSON lines")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("--since", type=_days, metavar="DAYS", help="only the last DAYS days (default: all)")
    export.add_argument("--output", "-o", metavar="FILE", help="default: standard output")
    export.set_defaults(func=cmd_export)

    worker = add("worker", help="serve the model over HTTP (POST /v1/fill-mask)")
    worker.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    worker.add_argument("--port", type=int, default=8000)
    worker.add_argument("--model", help="hub id or local directory (default: MODEL_NAME or bert-base-uncased)")
    worker.add_argument("--device", help="auto, cpu, cuda ... (default: MODEL_DEVICE or auto)")
    worker.set_defaults(func=cmd_worker)

    ray_serve = add("serve", help="serve the worker's API on Ray Serve: replicas, GPUs, autoscaling, a cluster")
    ray_serve.add_argument("--host", default="127.0.0.1", help="address Serve's HTTP proxy listens on")
    ray_serve.add_argument("--port", type=int, default=8000)
    ray_serve.add_argument("--replicas", type=int, default=1, help="replicas (the fewest, with --max-replicas)")
    ray_serve.add_argument("--max-replicas", type=int, help="autoscale up to this many replicas")
    ray_serve.add_argument(
        "--gpus-per-replica", type=float, help="GPUs each replica reserves (default: 1 if MODEL_DEVICE is cuda)"
    )
    ray_serve.add_argument("--cpus-per-replica", type=float, default=1.0)
    ray_serve.add_argument("--address", help="a Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    ray_serve.add_argument("--model", help="hub id or local directory (default: MODEL_NAME or bert-base-uncased)")
    ray_serve.add_argument("--device", help="auto, cpu, cuda ... (default: MODEL_DEVICE or auto)")
    ray_serve.set_defaults(func=cmd_serve)

    playground = add("playground", help="the playground page in your browser, the model in this process (no Telegram)")
    playground.add_argument("--model", help="hub id or local directory (default: MODEL_NAME or bert-base-uncased)")
    playground.add_argument("--device", help="auto, cpu, cuda ...")
    playground.add_argument("--host", default="127.0.0.1", help="address to listen on (this machine only by default)")
    playground.add_argument("--port", type=int, default=8080)
    playground.add_argument(
        "--allow-remote",
        action="store_true",
        help="listen beyond this machine (needs TELEGRAM_BOT_TOKEN; Mini App)",
    )
    playground.set_defaults(func=cmd_playground)

    predict = add("predict", help="fill the masks of one sentence and print the answer")
    predict.add_argument("text", help='a sentence with [MASK], e.g. "The cat sat on the [MASK]."')
    predict.add_argument("--top-k", type=int, default=5, help="candidates per mask (1-50)")
    predict.add_argument("--targets", help="comma-separated words: score only these")
    predict.add_argument("--json", action="store_true", help="print Hugging Face's fill-mask JSON")
    predict.add_argument("--model", help="hub id or local directory (default: MODEL_NAME or bert-base-uncased)")
    predict.add_argument("--device", help="auto, cpu, cuda ...")
    predict.set_defaults(func=cmd_predict)

    from models.bench.benchmark import add_arguments as add_bench_arguments

    bench = add("bench", help="HF pipeline vs. this worker, same sentences, same device")
    add_bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from bot.config import SettingsError
    from models.engine.loading import ModelLoadError

    args = build_parser().parse_args(argv)  # LOG_LEVEL from the environment is checked too: it is the default
    if args.log_level is None:  # a one-shot command prints its answer, not the model's loading chatter
        args.log_level = "INFO" if args.command in SERVER_COMMANDS else "WARNING"
    _setup_logging(args.log_level, args.log_format)
    if args.command in MODEL_COMMANDS:  # importing transformers costs a second: not for `health` every 30 s
        _progress_bars(logging.getLevelName(args.log_level) <= logging.INFO)
    try:
        return args.func(args)
    except SettingsError as exc:  # a database command's DATABASE_URL, say
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if args.command not in DATABASE_COMMANDS:
            raise
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: the database (DATABASE_URL) does not answer: {reason}", file=sys.stderr)
        return 1
    except ModelLoadError as exc:
        if getattr(args, "model", None):  # the name came from --model, not from MODEL_NAME
            exc = exc.naming("--model")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
