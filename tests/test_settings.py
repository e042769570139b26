import pytest

from service.settings import ConfigurationError, load_settings, unknown_variables


def test_defaults_are_the_embedded_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(_env_file=None)
    assert settings.database_url == "sqlite+aiosqlite:///./data/switchboard.db"
    assert settings.storage_url == "file://./data/recordings"
    assert settings.is_sqlite
    assert settings.should_auto_migrate


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SWITCHBOARD_STORAGE_URL", "ftp://x", "unknown storage scheme 'ftp'"),
        ("SWITCHBOARD_DATABASE_URL", "mysql://x/y", "unsupported database URL scheme 'mysql'"),
        ("SWITCHBOARD_VAPI_BASE_URL", "not a url", "not an http(s) URL"),
        ("SWITCHBOARD_RULES_FILE", "/nonexistent/rules.yaml", "does not exist"),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(_env_file=None)
    assert message in str(caught.value)
    assert variable in str(caught.value)


def test_every_unread_switchboard_variable_is_named() -> None:
    environ = {
        "SWITCHBOARD_LOG_LEVEL": "info",
        "SWITCHBOARD_DATABSE_URL": "sqlite+aiosqlite:///x.db",
        "switchboard_storage_url": "memory://",  # case-insensitive, as pydantic-settings reads them
        "SWITCHBOARD_TEST_POSTGRES_DSN": "postgresql://x",  # the test suite's own
        "OTHER_DATABSE_URL": "x",
    }
    assert unknown_variables(environ) == [
        "SWITCHBOARD_DATABSE_URL is set but is not a Switchboard setting: it is ignored; "
        "did you mean SWITCHBOARD_DATABASE_URL?"
    ]


@pytest.mark.parametrize(("text", "seconds"), [("90d", 90 * 86400.0), ("12h", 43200.0), ("3s", 3.0), ("45", 45.0)])
def test_retention_is_a_duration(monkeypatch: pytest.MonkeyPatch, text: str, seconds: float) -> None:
    monkeypatch.setenv("SWITCHBOARD_RETENTION", text)
    settings = load_settings(_env_file=None)
    assert settings.retention == seconds
    assert settings.retention_sweep_seconds == 3600
    assert settings.archive_format == "pcm"


@pytest.mark.parametrize(
    ("text", "reason"), [("soon", "is not a duration"), ("0s", "longer than zero"), ("-1d", "negative")]
)
def test_bad_retention_is_refused(monkeypatch: pytest.MonkeyPatch, text: str, reason: str) -> None:
    monkeypatch.setenv("SWITCHBOARD_RETENTION", text)
    with pytest.raises(ConfigurationError, match=rf"SWITCHBOARD_RETENTION: .*{reason}"):
        load_settings(_env_file=None)


def test_unset_retention_keeps_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_RETENTION", raising=False)
    assert load_settings(_env_file=None).retention is None


def test_delivery_history_is_kept_thirty_days_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_DELIVERY_HISTORY", raising=False)
    assert load_settings(_env_file=None).delivery_history == 30 * 86400
    monkeypatch.setenv("SWITCHBOARD_DELIVERY_HISTORY", "7d")
    assert load_settings(_env_file=None).delivery_history == 7 * 86400
    monkeypatch.setenv("SWITCHBOARD_DELIVERY_HISTORY", "")
    assert load_settings(_env_file=None).delivery_history is None, "empty: kept forever"
    monkeypatch.setenv("SWITCHBOARD_DELIVERY_HISTORY", "0")
    with pytest.raises(ConfigurationError, match=r"SWITCHBOARD_DELIVERY_HISTORY: .*longer than zero"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("public_url", "vapi_base_url", "warned"),
    [
        ("http://sb.example.com", "https://api.vapi.ai", True),
        ("https://sb.example.com", "https://api.vapi.ai", False),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8001", False),  # the simulator: plain http is fine
    ],
)
def test_a_plain_http_public_url_is_warned_about_only_for_vapis_own_cloud(
    public_url: str, vapi_base_url: str, warned: bool
) -> None:
    from service.app import insecure_public_url

    settings = load_settings(_env_file=None, public_url=public_url, vapi_base_url=vapi_base_url)
    assert insecure_public_url(settings) is warned


def test_forward_headers_are_a_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_FORWARD_URL", "https://crm.example.com/vapi/")
    monkeypatch.setenv("SWITCHBOARD_FORWARD_HEADERS", '{"Authorization": "Bearer crm"}')
    settings = load_settings(_env_file=None)
    assert settings.forward_url == "https://crm.example.com/vapi"
    assert settings.forward_headers == {"Authorization": "Bearer crm"}
    monkeypatch.setenv("SWITCHBOARD_FORWARD_HEADERS", "[1]")
    with pytest.raises(ConfigurationError, match="SWITCHBOARD_FORWARD_HEADERS"):
        load_settings(_env_file=None)
