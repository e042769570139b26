from typing import Any

from service.calls.redact import REDACTED, hide_recording_urls, redact


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


def test_credentials_anywhere_and_presigned_urls_never_survive() -> None:
    message = {
        "type": "status-update",
        "phoneNumber": {"twilioAuthToken": "tok", "twilioApiKey": "SKx", "twilioApiSecret": "sec", "number": "+1"},
        "call": {"credentials": [{"provider": "x", "authToken": "at", "apiKey": "k"}]},
        "artifact": {"presignedStereoUrl": "https://s3/x?sig=1", "recordingUrl": "https://r/1.wav"},
        "analysis": {"promptTokens": 12, "password_hint": None},
    }
    result = redact(message)
    assert result["phoneNumber"] == {
        "twilioAuthToken": REDACTED,
        "twilioApiKey": REDACTED,
        "twilioApiSecret": REDACTED,
        "number": "+1",
    }
    assert result["call"]["credentials"] == [{"provider": "x", "authToken": REDACTED, "apiKey": REDACTED}]
    assert result["artifact"] == {"recordingUrl": "https://r/1.wav"}, "presigned URLs are dropped"
    assert result["analysis"] == {"promptTokens": 12, "password_hint": None}, "counts and nulls are no secrets"


def test_recording_urls_are_hidden_from_keys_without_recordings_read() -> None:
    payload = {
        "artifact": {
            "recordingUrl": "https://r/m.wav",
            "stereoRecordingUrl": "https://r/s.wav",
            "pcapUrl": "https://r/p.pcap",
            "recording": {"stereoUrl": "https://r/s.wav", "mono": {"combinedUrl": "https://r/c.wav"}},
            "transcript": "AI: hi",
        }
    }
    assert hide_recording_urls(payload) == {"artifact": {"recording": {"mono": {}}, "transcript": "AI: hi"}}
