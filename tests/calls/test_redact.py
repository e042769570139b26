from typing import Any

from service.calls.redact import REDACTED, redact


def test_monitor_urls_and_server_headers_are_redacted() -> None:
    message: dict[str, Any] = {
        "type": "status-update",
        "call": {
            "id": "c1",
            "monitor": {"listenUrl": "wss://x/listen", "controlUrl": "https://x/control"},
            "assistantOverrides": {"server": {"url": "https://me/webhooks", "headers": {"X-Vapi-Secret": "s3"}}},
        },
        "items": [{"token": "t"}, {"ok": 1}],
    }
    result = redact(message)
    assert result["call"]["monitor"] == {"listenUrl": REDACTED, "controlUrl": REDACTED}
    assert result["call"]["assistantOverrides"]["server"] == {
        "url": "https://me/webhooks",
        "headers": {"X-Vapi-Secret": REDACTED},
    }
    assert result["items"] == [{"token": REDACTED}, {"ok": 1}]
    assert message["call"]["monitor"]["listenUrl"] == "wss://x/listen", "the input is not modified"


def test_null_secrets_stay_null() -> None:
    assert redact({"secret": None}) == {"secret": None}
