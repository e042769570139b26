from service.calls.schemas import CallCreate, Customer
from service.calls.service import build_vapi_request
from service.settings import Settings
from service.vapi.messages import DEFAULT_SERVER_MESSAGES, FINAL_TRANSCRIPTS


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def _body(**overrides: object) -> CallCreate:
    return CallCreate(
        assistant_id="asst",
        phone_number_id="pn",
        customer=Customer(number="+14155550123", name="Ada"),
        metadata={"crmId": "42"},
        **overrides,  # type: ignore[arg-type]
    )


def test_points_vapi_at_switchboard_with_the_secret_and_needed_messages() -> None:
    request = build_vapi_request(_body(), _settings(public_url="https://sb.example.com/", webhook_secret="s3cret"))
    overrides = request["assistantOverrides"]
    assert overrides["server"] == {
        "url": "https://sb.example.com/webhooks/vapi",
        "headers": {"X-Vapi-Secret": "s3cret"},
        "backoffPlan": {"type": "exponential", "maxRetries": 3, "baseDelaySeconds": 1},
    }
    for needed in ("status-update", "end-of-call-report", "speech-update", FINAL_TRANSCRIPTS):
        assert needed in overrides["serverMessages"]
    assert "user-interrupted" in overrides["serverMessages"], "Vapi's defaults are kept"
    assert "conversation-update" not in overrides["serverMessages"], "it repeats the conversation every turn"
    assert overrides["monitorPlan"] == {"listenEnabled": True, "controlEnabled": True}
    assert overrides["metadata"] == {"crmId": "42"}
    assert request["customer"] == {"number": "+14155550123", "name": "Ada"}


def test_callers_overrides_are_kept_and_extended() -> None:
    body = _body(
        assistant_overrides={
            "serverMessages": ["transcript"],
            "monitorPlan": {"listenAuthenticationEnabled": True, "listenEnabled": False},
            "variableValues": {"x": 1},
        }
    )
    overrides = build_vapi_request(body, _settings(public_url="https://sb.example.com"))["assistantOverrides"]
    assert overrides["serverMessages"][0] == "transcript"
    assert "conversation-update" not in overrides["serverMessages"]
    assert FINAL_TRANSCRIPTS not in overrides["serverMessages"], "all transcripts already include finals"
    assert overrides["monitorPlan"] == {
        "listenAuthenticationEnabled": True,
        "listenEnabled": True,
        "controlEnabled": True,
    }
    assert overrides["variableValues"] == {"x": 1}
    assert "headers" not in overrides["server"], "no secret configured, no header"


def test_without_public_url_the_server_setting_is_left_to_vapi() -> None:
    overrides = build_vapi_request(_body(), _settings())["assistantOverrides"]
    assert "server" not in overrides
    assert "serverMessages" not in overrides


def test_a_caller_who_asks_for_conversation_updates_gets_them() -> None:
    body = _body(assistant_overrides={"serverMessages": ["conversation-update"]})
    overrides = build_vapi_request(body, _settings(public_url="https://sb.example.com"))["assistantOverrides"]
    assert overrides["serverMessages"][0] == "conversation-update"
    assert {"status-update", "end-of-call-report", "speech-update", FINAL_TRANSCRIPTS} <= set(
        overrides["serverMessages"]
    )


REQUESTS = ("tool-calls", "function-call", "transfer-destination-request", "handoff-destination-request")


def test_without_an_upstream_no_request_message_is_subscribed() -> None:
    """Nobody could answer them: Vapi would wait, then go on without a tool result or a transfer."""
    default = build_vapi_request(_body(), _settings(public_url="https://sb.example.com"))["assistantOverrides"]
    asked = _body(assistant_overrides={"serverMessages": ["tool-calls", "transcript", "voice-request"]})
    listed = build_vapi_request(asked, _settings(public_url="https://sb.example.com"))["assistantOverrides"]
    for overrides in (default, listed):
        assert not set(overrides["serverMessages"]) & {*REQUESTS, "voice-request"}
    assert listed["serverMessages"][0] == "transcript"


def test_with_an_upstream_vapi_gets_switchboards_server_and_the_upstreams_subscription() -> None:
    upstream = {
        "url": "https://crm.example.com/vapi",
        "headers": {"Authorization": "Bearer crm"},
        "source": "call",
        "serverMessages": ["tool-calls", "end-of-call-report", "conversation-update"],
    }
    body = _body(assistant_overrides={"server": {"url": "https://crm.example.com/vapi"}})
    settings = _settings(public_url="https://sb.example.com", webhook_backoff_max_retries=0)
    overrides = build_vapi_request(body, settings, upstream)["assistantOverrides"]
    assert overrides["server"] == {"url": "https://sb.example.com/webhooks/vapi"}, "no backoff plan when 0 retries"
    assert overrides["serverMessages"][:3] == ["tool-calls", "end-of-call-report", "conversation-update"]
    assert {"status-update", "speech-update", "hang", FINAL_TRANSCRIPTS} <= set(overrides["serverMessages"])


def test_an_upstream_without_a_subscription_gets_vapis_default_list() -> None:
    upstream = {"url": "https://crm.example.com/vapi", "headers": {}, "source": "assistant"}
    overrides = build_vapi_request(_body(), _settings(public_url="https://sb.example.com"), upstream)
    assert set(DEFAULT_SERVER_MESSAGES) <= set(overrides["assistantOverrides"]["serverMessages"])


def test_a_legacy_server_url_of_the_caller_never_reaches_vapi() -> None:
    body = _body(assistant_overrides={"serverUrl": "https://crm.example.com/vapi", "serverUrlSecret": "s"})
    overrides = build_vapi_request(body, _settings(public_url="https://sb.example.com"))["assistantOverrides"]
    assert "serverUrl" not in overrides
    assert "serverUrlSecret" not in overrides
    assert overrides["server"]["url"] == "https://sb.example.com/webhooks/vapi"
