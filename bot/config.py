"""The bot's settings: one typed object read from the environment and ``.env``, checked at start-up."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.settings import ModelSettings

DEFAULT_GUIDES_DIR = Path("guides")
S = TypeVar("S", bound=BaseSettings)


def _any_case(value: object) -> object:
    """Choices read in any case and spacing: " Hinglish" is hinglish."""
    return value.strip().lower() if isinstance(value, str) else value


def token_help() -> str:
    """How to get a token and where to put it. ``.env.example`` is named only where it is (a checkout, not a wheel)."""
    example = " (.env.example here lists every setting)" if Path(".env.example").is_file() else ""
    return (
        "Open Telegram, talk to @BotFather (https://t.me/BotFather), send /newbot and follow its questions; "
        "it answers with a token like 123456789:AAH... Put it in a file named .env in the folder you start mlm-bot "
        f"from, as the line TELEGRAM_BOT_TOKEN=<token>{example}, or export it in the shell."
    )


DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/mlm-bot.sqlite3"


# A database driver that is an extra of this package, and how to install it.
DRIVER_EXTRAS = {"asyncpg": 'pip install "mlm-bot[postgres]" (in a checkout: pip install -e ".[postgres]")'}


def check_database_url(url: str) -> str:
    """``url`` if SQLAlchemy can use it with asyncio here; else ValueError with one line saying what to do (a
    missing driver names the extra or the package to install). The password is never repeated."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "like sqlite+aiosqlite:///data/mlm-bot.sqlite3 or postgresql+asyncpg://user:password@host/db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a database URL ({example})") from None
    try:
        dialect = parsed.get_dialect(_is_async=True)
    except NoSuchModuleError:
        raise ValueError(f"SQLAlchemy knows no database called {parsed.drivername!r} ({example})") from None
    if not getattr(dialect, "is_async", False):
        raise ValueError(f"{parsed.drivername} is not an asyncio driver: use one {example}")
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = (getattr(exc, "name", None) or parsed.get_driver_name()).split(".")[0]
        install = DRIVER_EXTRAS.get(module, f"pip install {module}")
        raise ValueError(f"{parsed.drivername} needs the {module} package, which is not installed: {install}") from None
    return url


class StorageSettings(BaseSettings):
    """Where the interaction log lives: all the database commands need (no bot token)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL

    _usable_database = field_validator("database_url")(lambda value: check_database_url(value))


class HealthSettings(BaseSettings):
    """Where the bot listens: the webhook, or ``/healthz`` and ``/metrics`` (``mlm-bot health`` reads just these;
    no token needed)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Webhook mode (polling is the default): Telegram posts updates to WEBHOOK_URL, the bot serves them on
    # WEBHOOK_LISTEN:WEBHOOK_PORT at the URL's path, behind a TLS reverse proxy.
    webhook_url: str | None = None
    # This machine only: the TLS reverse proxy runs beside the bot (compose listens on 0.0.0.0 inside the
    # container and publishes the port on 127.0.0.1).
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(8443, ge=1, le=65535)
    # /healthz and /metrics in polling mode (in webhook mode they are on the webhook server). 0: no server.
    metrics_listen: str = "127.0.0.1"  # this machine only; compose sets 0.0.0.0 inside the container
    metrics_port: int = Field(9090, ge=0, le=65535)
    # What `mlm-bot run` does when it cannot start as configured (a missing token, a refused one, a port in use):
    # "exit" (code 2), or "wait": say so on /healthz ("misconfigured") and wait for a stop, so that a container
    # does not restart into the same error again and again (the image sets "wait").
    on_config_error: Literal["exit", "wait"] = "exit"

    def health_address(self) -> tuple[str, int]:
        """Where /healthz is served: on the webhook's server in webhook mode, else METRICS_LISTEN:METRICS_PORT."""
        if (self.webhook_url or "").strip():
            return self.webhook_listen, self.webhook_port
        return self.metrics_listen, self.metrics_port

    def healthz_url(self) -> str | None:
        host, port = self.health_address()
        host = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{port}/healthz" if port else None


class StartupError(Exception):
    """Something the bot cannot start with (a refused token, a port in use, a webhook URL Telegram refuses):
    its message says which and what to do; retrying as it is cannot help."""


class GuideSettings(BaseSettings):
    """What the guides and the bot's words are read from: ``mlm-bot guides`` needs these and no token."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # The MLM guide's keywords, replacing those in its guide.toml (kept so older .env files work); every other
    # guide has its own keywords in its folder (docs/guides.md).
    trigger_keywords: Annotated[tuple[str, ...] | None, NoDecode] = None
    # A folder of your own guides (a folder each, like templates/guides/mlm): they add to the shipped ones and
    # replace one with the same name. Unset: ./guides when that folder exists.
    guides_dir: Path | None = None
    # A folder with your own wording for the bot's other messages (a copy of templates/), read before the shipped one.
    mlm_bot_templates: Path | None = None
    # Hinglish verbs agree with the speaker: the creator's words in the bot's mouth ("bhejunga"/"bhejungi").
    creator_gender: Literal["male", "female"] = "male"

    _gender_any_case = field_validator("creator_gender", mode="before")(lambda value: _any_case(value))

    @field_validator("trigger_keywords", mode="before")
    @classmethod
    def _split_keywords(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, (list, tuple)):
            value = tuple(v for v in value if v)
            if not value:
                raise ValueError("needs at least one keyword, e.g. TRIGGER_KEYWORDS=MLM")
        return value

    def guides_folder(self) -> Path | None:
        """GUIDES_DIR, else ./guides if there is such a folder, else None (the shipped guides only)."""
        if self.guides_dir is not None:
            return self.guides_dir
        return DEFAULT_GUIDES_DIR if DEFAULT_GUIDES_DIR.is_dir() else None


class CompareSettings(BaseSettings):
    """The models /compare (and the playground's compare tab) puts side by side."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # /compare: hub ids or local folders, comma-separated (loaded in this process on first use).
    compare_models: Annotated[tuple[str, ...], NoDecode] = (
        "google-bert/bert-base-uncased",
        "FacebookAI/roberta-base",
        "distilbert/distilbert-base-uncased",
        "albert/albert-base-v2",
    )

    # What the compare models may take together (the bot's own model is not counted, nor loaded twice). 700 MB
    # fits a 2 GB server next to the bot in fp32; 0: no limit. docs/deploy.md has a table by server size.
    compare_memory_mb: int = Field(700, ge=0, description="most memory the /compare models take together; 0: no limit")

    @field_validator("compare_models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
            if not value:
                raise ValueError("needs at least one model, e.g. COMPARE_MODELS=google-bert/bert-base-uncased")
        return value


class PlaygroundSettings(ModelSettings, CompareSettings):
    """What ``mlm-bot playground`` reads: the model, the compare models, and the token only if it must check a
    Mini App's initData (on an address beyond this machine)."""

    telegram_bot_token: SecretStr | None = None


class SettingsError(Exception):
    """A setting is missing or wrong; the message names it and says how to fix it."""


class BotSettings(ModelSettings, CompareSettings, StorageSettings, HealthSettings, GuideSettings):
    """Everything ``mlm-bot run`` reads: the model's settings, the storage's and the listening ones (each declared
    once, in its own class), and the bot's own below."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    telegram_bot_token: SecretStr
    telegram_api_base_url: str = "https://api.telegram.org/bot"
    admin_user_ids: Annotated[frozenset[int], NoDecode] = frozenset()
    # The language of people who have not chosen one (/language), and of public replies in groups.
    default_language: Literal["english", "hinglish"] = "english"
    # The playground as a Telegram Mini App: its public https address (the bot serves /app on its HTTP server,
    # behind the same reverse proxy as the webhook). Set: a "🧪 Playground" button and the chat's menu button.
    mini_app_url: str | None = None
    # A follow-gate: people join this channel (@name or its numeric id) before a guide's first page. The bot must be
    # an administrator there (Telegram tells only admins who is a member); otherwise everyone gets the guides.
    require_channel: str | int | None = None
    # Broadcasts (mlm-bot broadcast) are sent at most this fast, and only while the bot has nothing else to send.
    broadcast_per_second: float = Field(20, gt=0, le=30, description="messages a second, at most")
    actions_per_minute: int = Field(
        20, ge=1, description="per person: messages and button presses answered in private (a burst, then this rate)"
    )
    actions_in_flight: int = Field(4, ge=1, description="per person: actions still being answered at once")
    predictions_per_minute: int = Field(20, ge=1, description="per user, DMs and /predict")
    inline_queries_per_minute: int = Field(60, ge=1, description="per user, inline mode")
    retention_days: int = Field(90, ge=1, description="interaction texts older than this are removed daily")
    shutdown_budget_s: float = Field(
        20, gt=0, description="SIGTERM to exit, at most (below compose's stop_grace_period); owed replies are kept"
    )
    inbox_max_age_s: float = Field(
        600, gt=0, description="updates left unfinished by a crash are answered after a restart if younger than this"
    )
    # python-telegram-bot logs whole updates (people's texts and names) at DEBUG: only when asked for on purpose.
    log_updates: bool = False
    # Telegram sends it back with every delivery; unset, derived from the token (webhook_secret_value).
    webhook_secret: SecretStr | None = None

    @field_validator("telegram_bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError(f"is empty. {token_help()}")
        if not re.fullmatch(r"\d+:[A-Za-z0-9_-]{20,}", value.get_secret_value().strip()):
            raise ValueError("does not look like a bot token (digits, a colon, then 20+ letters)")
        return SecretStr(value.get_secret_value().strip())

    _language_any_case = field_validator("default_language", mode="before")(lambda value: _any_case(value))

    @field_validator("require_channel", mode="before")
    @classmethod
    def _channel(cls, value: object) -> object:
        if isinstance(value, int) or value is None:
            return value
        text = str(value).strip()
        if not text:
            return None
        if re.fullmatch(r"-?\d{5,20}", text):
            return int(text)
        if re.fullmatch(r"@?[A-Za-z][A-Za-z0-9_]{3,31}", text):
            return "@" + text.lstrip("@")
        if match := re.fullmatch(r"(?:https?://)?t\.me/([A-Za-z][A-Za-z0-9_]{3,31})/?", text):
            return "@" + match.group(1)
        raise ValueError("must be the channel's @name (like @mychannel) or its numeric id (like -1001234567890)")

    @field_validator("admin_user_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if not all(re.fullmatch(r"-?\d+", p) for p in parts):
                raise ValueError("must be numeric Telegram user ids separated by commas, e.g. 12345,67890")
            return frozenset(int(p) for p in parts)
        return value

    @field_validator("telegram_api_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (default https://api.telegram.org/bot)")
        return value

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _webhook_url(cls, value: object) -> object:
        return _address(
            value, lambda u: u.scheme in ("http", "https"),
            "must be the public https:// address Telegram posts updates to, e.g. https://bot.example.com/telegram",
        )  # fmt: skip

    @field_validator("mini_app_url", mode="before")
    @classmethod
    def _mini_app_url(cls, value: object) -> object:
        return _address(
            value, lambda u: u.scheme == "https" and u.path.rstrip("/").endswith("/app"),
            "must be the playground's public https:// address, ending in /app, e.g. https://bot.example.com/app "
            "(Telegram opens Mini Apps over https only)",
        )  # fmt: skip

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _webhook_secret(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value.strip()):
                raise ValueError("must be 1-256 characters: letters, digits, _ and - (Telegram's rule)")
            return value.strip()
        return value

    def token(self) -> str:
        return self.telegram_bot_token.get_secret_value()

    @property
    def webhook_path(self) -> str:
        """The path the webhook server answers on: the public URL's path (a reverse proxy passes it on)."""
        return urlsplit(self.webhook_url or "").path or "/"

    def webhook_secret_value(self) -> str:
        """WEBHOOK_SECRET, or one derived from the token: the same on every start and every replica (a random one
        per start made Telegram's deliveries with the last run's secret fail with 403 while the model loaded,
        and two replicas refused each other's), and unguessable without the token."""
        if self.webhook_secret is not None:
            return self.webhook_secret.get_secret_value()
        digest = hmac.new(self.token().encode(), b"mlm-bot webhook secret v1", hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")  # 43 of Telegram's A-Z a-z 0-9 _ -


def _address(value: object, fits: Callable[[SplitResult], bool], message: str) -> object:
    """An optional URL setting: blank is unset; otherwise it needs a host and ``fits``, or ``message`` says why."""
    if isinstance(value, str):
        value = value.strip() or None
    if isinstance(value, str):
        parts = urlsplit(value)
        if not parts.hostname or not fits(parts):
            raise ValueError(message)
    return value


def load_settings(**overrides: object) -> BotSettings:
    """Settings from the environment and ``.env``; every problem becomes one readable ``SettingsError``."""
    return read_settings(BotSettings, **overrides)


def database_url() -> str:
    """DATABASE_URL, checked (the database commands): SettingsError, one line, if it cannot be used here."""
    return read_settings(StorageSettings).database_url


def read_settings(kind: type[S], **overrides: object) -> S:
    """``kind`` from the environment and ``.env``; every problem one readable line of a ``SettingsError`` (never
    the value itself: a URL may hold a password)."""
    try:
        return kind(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "SETTINGS"
            if name == "TELEGRAM_BOT_TOKEN" and error["type"] == "missing":
                lines.append(f"TELEGRAM_BOT_TOKEN is not set. {token_help()}")
            else:
                lines.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
        raise SettingsError("\n".join(lines)) from None
