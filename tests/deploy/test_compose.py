"""The deployment, for real: the image built from the Dockerfile and ``docker compose up`` in a real Docker engine.

What README's "Deploy" section tells a creator to do is what runs here, in a copy of the repository's files:
``cp .env.example .env``, fill it in, ``docker compose up -d --build``. Only a small test override is added, for
what a real server has and this machine does not: the build's pip reaches the package index over the host's
network, the bot reaches the fake Bot API server on the host (``host.docker.internal``), and the model is a
tiny local folder instead of a download from the Hugging Face hub.

Two layouts: the model in the bot's process, and the bot served by the model worker (on CPU). In each, a user's
``/start``, ``MLM`` and ``[MASK]`` sentence get their answers, ``docker compose stop`` ends the bot with exit 0,
and the SQLite file on the host holds the interactions.

Marked ``deploy``: the default ``pytest`` run leaves it out (it builds an image: minutes); ``.ci/run`` runs
``pytest -m deploy tests/deploy`` when the machine has a Docker engine, and says so when it does not.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.bench.random_models import BUILDERS
from tests.support.chats import lesson_started
from tests.support.fake_telegram import TOKEN, FakeTelegram

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
PROJECT = "mlm-bot-smoke"


def compose_command() -> list[str] | None:
    """``docker compose`` (v2) where there is one, else the older ``docker-compose``."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        done = subprocess.run([*command, "version"], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return command
    return None


def docker_ready() -> str | None:
    """Why Docker cannot be used here, or None."""
    if shutil.which("docker") is None:
        return "no docker command"
    done = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"no Docker engine answers ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''})"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose`"
    return None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    why = docker_ready()
    if why:
        pytest.skip(f"deployment smoke test skipped: {why}")
    command = compose_command()
    assert command is not None
    return command


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = BUILDERS["bert"](tmp_path_factory.mktemp("model") / "bert")
    for item in [path, *path.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)  # readable by the container's unprivileged user
    return path


def copy_of_the_repository(target: Path) -> Path:
    """The repository's files as a fresh clone has them (and files not committed yet, not ignored ones)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


TEST_OVERRIDE = """\
# Only for this test machine: the build's pip uses the host's network, the bot reaches the fake Bot API on the
# host, and the model is a tiny local folder.
services:
  bot:
    build:
      context: .
      network: host
    extra_hosts:
      - "host.docker.internal:host-gateway"
    volumes:
      - {model}:/models/tiny:ro
"""

WORKER_OVERRIDE = """\
  worker:
    build:
      context: .
      network: host
    volumes:
      - {model}:/models/tiny:ro
"""


class Deployment:
    def __init__(self, compose: list[str], project: Path, files: list[str]) -> None:
        self.compose, self.project, self.files = compose, project, files

    def run(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [*self.compose, "-p", PROJECT]
        for name in self.files:
            command += ["-f", name]
        done = subprocess.run(
            [*command, *args], cwd=self.project, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def container(self, service: str) -> str:
        return self.run("ps", "-q", service).stdout.strip()

    def inspect(self, service: str) -> dict:
        done = subprocess.run(
            ["docker", "inspect", self.container(service)], capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout)[0]

    def logs(self) -> str:
        return self.run("logs", "--no-color", check=False).stdout

    async def stop(self) -> float:
        """``compose stop``; returns the seconds it took."""
        started = time.monotonic()
        await asyncio.to_thread(self.run, "stop")
        return time.monotonic() - started


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path, compose: list[str]) -> Iterator[Path]:
    root = copy_of_the_repository(tmp_path / "mlm-bot")
    yield root
    subprocess.run(
        [*compose, "-p", PROJECT, "down", "-v", "--remove-orphans"], cwd=root, capture_output=True, check=False
    )


def write_env(project: Path, fake: FakeTelegram) -> None:
    """README: ``cp .env.example .env``, then the token (and here: the fake Bot API, the tiny model)."""
    shutil.copy(project / ".env.example", project / ".env")
    port = fake.url.rsplit(":", 1)[1].split("/")[0]
    settings = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": f"http://host.docker.internal:{port}/bot",
        "MODEL_NAME": "/models/tiny",
        "HF_HUB_OFFLINE": "1",
    }
    lines = [
        line for line in (project / ".env").read_text().splitlines() if line.split("=", 1)[0].strip() not in settings
    ]
    lines += [f"{key}={value}" for key, value in settings.items()]
    (project / ".env").write_text("\n".join(lines) + "\n")


async def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(1)


async def conversation(fake: FakeTelegram) -> None:
    """A user's /start, MLM and a [MASK] sentence, each answered."""
    user = fake.user(777)
    await fake.send_text(user, "/start")
    await fake.wait_for(lambda f: len(f.sent("sendMessage", 777)) >= 1, timeout=60)
    await fake.send_text(user, "MLM")
    await fake.wait_for(lambda f: lesson_started(f, 777), timeout=60)
    await fake.send_text(user, "The cat sat on the [MASK].")
    await fake.wait_for(
        lambda f: any("Best guess" in c.params.get("text", "") for c in f.sent("sendMessage", 777)), timeout=60
    )


def healthy(deployment: Deployment, service: str) -> bool:
    state = deployment.inspect(service)["State"]
    return state.get("Health", {}).get("Status") == "healthy"


def interactions(project: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(project / "data" / "mlm-bot.sqlite3") as db:
        return db.execute("SELECT kind, user_id FROM interactions ORDER BY id").fetchall()


async def a_second_guide(deployment: Deployment, fake: FakeTelegram) -> None:
    """docs/guides.md with Docker: `guides new` in a throwaway container writes ./guides on the host (mounted in
    both), HUP reloads the running bot, and the new keyword gets the new guide."""
    made = deployment.run("run", "--rm", "bot", "mlm-bot", "guides", "new", "bert", "--keywords", "BERT", check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    assert (deployment.project / "guides" / "bert" / "01-intro.md").is_file()
    deployment.run("kill", "-s", "HUP", "bot")
    user = fake.user(778)
    for _ in range(30):  # the reload takes a moment; until then BERT is nobody's keyword (a hint comes back)
        await fake.send_text(user, "BERT")
        await asyncio.sleep(1)
        if any("guide:bert:" in str(c.params.get("reply_markup")) for c in fake.sent("sendMessage", 778)):
            return
    raise AssertionError("the new guide never answered: " + deployment.logs()[-2000:])


async def run_layout(
    compose: list[str], project: Path, files: list[str], override: str, *, guides: bool = False
) -> Deployment:
    fake = FakeTelegram()
    async with fake.running(host="0.0.0.0"):
        write_env(project, fake)
        (project / "docker-compose.test.yml").write_text(override)
        deployment = Deployment(compose, project, [*files, "docker-compose.test.yml"])
        await asyncio.to_thread(deployment.run, "up", "-d", "--build")
        try:
            await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=300)  # polling
            await conversation(fake)
            if guides:
                await a_second_guide(deployment, fake)
            await wait_until(lambda: healthy(deployment, "bot"), 120, "the bot's healthcheck")
            # The bot runs as the image's unprivileged user, not root.
            status = deployment.run("exec", "-T", "bot", "cat", "/proc/1/status").stdout
            uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            assert uid == "10001", status
            stopped_in = await deployment.stop()
        except BaseException:
            print(deployment.logs())
            raise
    state = deployment.inspect("bot")["State"]
    assert state["ExitCode"] == 0, deployment.logs()
    assert stopped_in < 30, f"stop took {stopped_in:.0f} s"
    kinds = {kind for kind, user_id in interactions(project) if user_id == 777}
    assert {"start", "guide", "prediction"} <= kinds, kinds
    assert fake.rejections == []
    return deployment


async def test_the_bot_with_the_model_in_its_process(compose: list[str], project: Path, tiny_model: Path) -> None:
    await run_layout(compose, project, ["docker-compose.yml"], TEST_OVERRIDE.format(model=tiny_model), guides=True)


async def test_the_bot_served_by_the_model_worker(compose: list[str], project: Path, tiny_model: Path) -> None:
    override = TEST_OVERRIDE.format(model=tiny_model) + WORKER_OVERRIDE.format(model=tiny_model)
    deployment = await run_layout(compose, project, ["docker-compose.yml", "compose/worker.yml"], override)
    worker = deployment.inspect("worker")
    assert worker["State"]["ExitCode"] == 0
    # The predictions came from the worker: its log says it served them, and the bot's says where it sent them.
    logs = deployment.logs()
    assert "using the model worker at http://worker:8000" in logs
    env = dict(item.split("=", 1) for item in deployment.inspect("bot")["Config"]["Env"])
    assert env["MODEL_WORKER_URL"] == "http://worker:8000"


def test_a_worker_whose_model_cannot_load_exits_1(compose: list[str]) -> None:
    """So that compose's ``restart: unless-stopped`` brings it back (the image is the one the layouts built)."""
    done = subprocess.run(
        ["docker", "run", "--rm", "-e", "MODEL_NAME=/models/missing", "-e", "HF_HUB_OFFLINE=1", "mlm-bot:local",
         "mlm-bot", "worker"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "/models/missing" in done.stderr


async def test_a_missing_token_waits_as_misconfigured_instead_of_a_restart_loop(
    compose: list[str], project: Path, tiny_model: Path
) -> None:
    """README's set-up with the token not filled in yet: the container stays up without restarting, its log has the
    error once, the healthcheck command says "misconfigured" and why, and a stop ends it at once (exit 2)."""
    shutil.copy(project / ".env.example", project / ".env")  # TELEGRAM_BOT_TOKEN= left empty
    (project / "docker-compose.test.yml").write_text(TEST_OVERRIDE.format(model=tiny_model))
    deployment = Deployment(compose, project, ["docker-compose.yml", "docker-compose.test.yml"])
    await asyncio.to_thread(deployment.run, "up", "-d", "--build")
    try:
        await wait_until(lambda: "ON_CONFIG_ERROR=wait" in deployment.logs(), 120, "the misconfigured line")
        await asyncio.sleep(10)  # a crash loop would have restarted it meanwhile
        state = deployment.inspect("bot")
        assert state["State"]["Running"] and state["RestartCount"] == 0, state["State"]
        assert deployment.logs().count("TELEGRAM_BOT_TOKEN: is empty") == 1, deployment.logs()
        health = deployment.run("exec", "-T", "bot", "mlm-bot", "health", check=False)
        assert health.returncode == 1 and '"status":"misconfigured"' in health.stdout.replace(" ", ""), health
        stopped_in = await deployment.stop()
    except BaseException:
        print(deployment.logs())
        raise
    assert deployment.inspect("bot")["State"]["ExitCode"] == 2
    assert stopped_in < 10, f"stop took {stopped_in:.0f} s"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["docker-compose.yml"], {"bot": {}}),
        (["docker-compose.yml", "compose/worker.yml"], {"bot": {"MODEL_WORKER_URL": "http://worker:8000"}}),
        (
            ["docker-compose.yml", "compose/worker.yml", "compose/gpu.yml"],
            {"bot": {"MODEL_WORKER_URL": "http://worker:8000"}, "worker": {"MODEL_DEVICE": "cuda"}},
        ),
        (
            ["docker-compose.yml", "compose/postgres.yml"],
            {"bot": {"DATABASE_URL": "postgresql+asyncpg://mlm:mlm@postgres:5432/mlm"}},
        ),
        (["docker-compose.yml", "compose/webhook.yml"], {"bot": {"WEBHOOK_PORT": "8443"}}),
    ],
    ids=["in-process", "worker", "gpu", "postgres", "webhook"],
)
def test_every_documented_layout_is_a_valid_compose_file(
    compose: list[str], tmp_path: Path, files: list[str], expected: dict
) -> None:
    """The layouts this machine cannot run (no GPU, no PostgreSQL image without Docker Hub) are at least valid
    compose files that wire the bot as README says; and in none of them does anything listen in public: the
    worker publishes no port at all, the bot's ports only on the host's loopback."""
    project = copy_of_the_repository(tmp_path / "mlm-bot")
    shutil.copy(project / ".env.example", project / ".env")
    command = [*compose, "-p", PROJECT]
    for name in files:
        command += ["-f", name]
    done = subprocess.run(
        [*command, "config"], cwd=project, capture_output=True, text=True, check=False, env={**os.environ}
    )
    assert done.returncode == 0, done.stderr
    import yaml

    config = yaml.safe_load(done.stdout)
    for service, variables in expected.items():
        environment = config["services"][service].get("environment", {})
        for key, value in variables.items():
            assert environment.get(key) == value, (service, key, environment)
    for name, service in config["services"].items():
        ports = service.get("ports") or []
        if name == "worker":
            assert ports == [], "the worker is reached on the compose network, never published"
        for port in ports:  # Compose v2 writes {host_ip, published, target}; v1 "127.0.0.1:9090:9090"
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
            assert host_ip == "127.0.0.1", (name, port)


def _container_logs(container: str) -> str:
    done = subprocess.run(["docker", "logs", container], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


async def test_two_replicas_one_active_and_a_standby_that_takes_over(
    compose: list[str], project: Path, tiny_model: Path
) -> None:
    """docs/deploy.md's ``docker compose up -d --scale bot=2``: both replicas come up healthy on one SQLite file,
    one polls and the other stands by; ``docker kill`` of the active one, and the standby answers within seconds.
    A ``./data`` made on the host keeps its owner."""
    fake = FakeTelegram()
    # ./data made by someone on the host (as `git clone` and `mkdir` would): it stays theirs, and so do the files
    # the bot writes in it (the containers run as its owner).
    host_owner = 4321
    (project / "data").mkdir()
    os.chown(project / "data", host_owner, host_owner)
    async with fake.running(host="0.0.0.0"):
        write_env(project, fake)
        (project / "docker-compose.test.yml").write_text(TEST_OVERRIDE.format(model=tiny_model))
        deployment = Deployment(compose, project, ["docker-compose.yml", "docker-compose.test.yml"])
        await asyncio.to_thread(deployment.run, "up", "-d", "--build", "--scale", "bot=2")
        try:
            await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=300)
            containers = deployment.run("ps", "-q", "bot").stdout.split()
            assert len(containers) == 2

            def one_up_one_standing_by() -> bool:
                logs = [_container_logs(c) for c in containers]
                return sorted(("is up (model" in log, "standing by" in log) for log in logs) == [
                    (False, True),
                    (True, False),
                ]

            await wait_until(one_up_one_standing_by, 180, "one active replica and one standby")
            await conversation(fake)
            active = next(c for c in containers if "is up (model" in _container_logs(c))
            standby = next(c for c in containers if c != active)
            await wait_until(lambda: all(healthy_container(c) for c in containers), 120, "both healthchecks")
            await asyncio.to_thread(subprocess.run, ["docker", "kill", active], capture_output=True, check=True)
            killed = time.monotonic()
            await fake.send_text(fake.user(778), "The dog sat on the [MASK].")
            await fake.wait_for(lambda f: bool(f.sent("sendMessage", 778)), timeout=60)
            took = time.monotonic() - killed
            assert "is up (model" in _container_logs(standby)
        except BaseException:
            print(deployment.logs())
            raise
    assert took < 10, f"the standby answered {took:.1f} s after the kill"
    assert (project / "data").stat().st_uid == host_owner
    assert (project / "data" / "mlm-bot.sqlite3").stat().st_uid == host_owner
    assert {user_id for _, user_id in interactions(project)} >= {777, 778}


def healthy_container(container: str) -> bool:
    done = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)[0]["State"].get("Health", {}).get("Status") == "healthy"
