import pytest

from service.settings import ConfigurationError, load_settings


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
    assert variable in str(caught.value) or variable == "SWITCHBOARD_RULES_FILE"


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
