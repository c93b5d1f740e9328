"""Settings errors name the variable and say how to fix it."""

from __future__ import annotations

import pytest

from bot.config import SettingsError, load_settings

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("TELEGRAM_BOT_TOKEN", "TRIGGER_KEYWORDS", "ADMIN_USER_IDS", "TELEGRAM_API_BASE_URL", "DATABASE_URL",
                 "GUIDES_DIR", "MLM_BOT_TEMPLATES"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_missing_token_explains_botfather() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "TELEGRAM_BOT_TOKEN is not set" in str(info.value) and "@BotFather" in str(info.value)


def test_malformed_token_is_named() -> None:
    with pytest.raises(SettingsError, match="TELEGRAM_BOT_TOKEN: does not look like a bot token"):
        load_settings(telegram_bot_token="hello")


def test_values_from_the_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    (tmp_path / ".env").write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nTRIGGER_KEYWORDS=MLM, BERT ,\n")
    monkeypatch.setenv("ADMIN_USER_IDS", "12, 34")
    settings = load_settings()
    assert settings.token() == TOKEN
    assert settings.trigger_keywords == ("MLM", "BERT")
    assert settings.admin_user_ids == frozenset({12, 34})
    assert settings.telegram_api_base_url == "https://api.telegram.org/bot"
    assert settings.database_url.startswith("sqlite+aiosqlite:///data/")
    assert TOKEN not in repr(settings)  # the token is a secret: never printed with the settings


def test_guides_and_templates_folders_come_from_dotenv_too(tmp_path) -> None:
    """GUIDES_DIR and MLM_BOT_TEMPLATES in .env are read (MLM_BOT_TEMPLATES once worked only when exported), and
    without GUIDES_DIR a ./guides folder is used once it exists."""
    assert load_settings(telegram_bot_token=TOKEN).guides_folder() is None
    (tmp_path / "guides").mkdir()
    assert str(load_settings(telegram_bot_token=TOKEN).guides_folder()) == "guides"
    (tmp_path / ".env").write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nGUIDES_DIR=/srv/guides\nMLM_BOT_TEMPLATES=mine\n")
    settings = load_settings()
    assert str(settings.guides_folder()) == "/srv/guides" and str(settings.mlm_bot_templates) == "mine"
    assert settings.trigger_keywords is None  # unset: the MLM guide's own keywords (its guide.toml)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ADMIN_USER_IDS", "alice", "ADMIN_USER_IDS: must be numeric"),
        ("TRIGGER_KEYWORDS", " , ", "TRIGGER_KEYWORDS: needs at least one keyword"),
        ("TELEGRAM_API_BASE_URL", "api.telegram.org", "TELEGRAM_API_BASE_URL: must start with http"),
        ("CREATOR_GENDER", "robot", "CREATOR_GENDER: Input should be 'male' or 'female'"),
    ],
)
def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:9090/healthz"),
        ({"metrics_listen": "10.0.0.5", "metrics_port": 9100}, "http://10.0.0.5:9100/healthz"),
        ({"webhook_url": "https://bot.example.com/hook"}, "http://127.0.0.1:8443/healthz"),
        ({"webhook_url": "https://bot.example.com/hook", "webhook_listen": "::"}, "http://[::1]:8443/healthz"),
        ({"metrics_port": 0}, None),
    ],
)
def test_mlm_bot_health_asks_where_the_bot_listens(env: dict, url: str | None) -> None:
    from bot.config import HealthSettings

    assert HealthSettings(_env_file=None, **env).healthz_url() == url


def test_nothing_listens_beyond_this_machine_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.cli import build_parser
    from bot.config import HealthSettings

    for name in ("WEBHOOK_LISTEN", "METRICS_LISTEN", "WORKER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(telegram_bot_token=TOKEN)
    assert (settings.webhook_listen, settings.metrics_listen) == ("127.0.0.1", "127.0.0.1")
    assert HealthSettings().webhook_listen == "127.0.0.1"
    assert build_parser().parse_args(["worker"]).host == "127.0.0.1"
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    assert settings.worker_token is None and settings.worker_token_value() is None


def test_the_worker_token_is_a_secret_of_one_word(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_TOKEN", " s3cret-token ")
    settings = load_settings(telegram_bot_token=TOKEN)
    assert settings.worker_token_value() == "s3cret-token" and "s3cret" not in repr(settings)
    with pytest.raises(SettingsError, match="WORKER_TOKEN: must be one word"):
        load_settings(telegram_bot_token=TOKEN, worker_token="two words")


def test_creator_gender_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("CREATOR_GENDER", " Female ")
    assert load_settings().creator_gender == "female"
