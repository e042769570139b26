"""Removing capabilities and secrets from Vapi payloads before they are stored or shown (pure).

Stored timelines never hold (contract section 9): monitor URLs, header values, presigned artifact URLs
(``artifact.presigned*Url``: anyone holding one downloads the recording until it expires), and any
string under a key named like a credential (``twilioAuthToken``, ``twilioApiSecret``, ``apiKey``,
``password``…). Recording and pcap URLs are kept, but shown only to keys with ``recordings:read``
(:func:`hide_recording_urls`).
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"
# Keys whose values are secrets wherever they appear in a Vapi payload (compared lower-case).
SECRET_KEYS = frozenset(
    {"listenurl", "controlurl", "secret", "token", "authorization", "password", "apikey", "x-vapi-secret"}
)
# Keys whose whole value (a dict of header name → value) is secret: server headers carry our secret.
SECRET_CONTAINERS = frozenset({"headers", "credentials"})
# Any string under a key named like a credential: twilioAuthToken, twilioApiSecret, apiKey, authToken…
SECRET_LIKE = re.compile(r"token|secret|password|passwd|api_?key|private_?key|authorization", re.IGNORECASE)
# Presigned URLs (presignedStereoUrl, …) are dropped, not redacted: Vapi itself "never stores" them.
PRESIGNED = re.compile(r"^presigned.*url$", re.IGNORECASE)
# Where a payload says where the audio is: for keys with recordings:read only.
RECORDING_URL = re.compile(r"(recording|pcap|stereo|mono).*url$", re.IGNORECASE)


def _secret(key: str, item: Any) -> bool:
    if item is None:
        return False
    return key.lower() in SECRET_KEYS or (isinstance(item, str) and SECRET_LIKE.search(key) is not None)


def redact(value: Any) -> Any:
    """A copy of ``value`` without monitor URLs, header values, presigned URLs and other secrets."""
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if PRESIGNED.match(name):
                continue
            if _secret(name, item):
                result[key] = REDACTED
            elif name.lower() in SECRET_CONTAINERS and isinstance(item, dict):
                result[key] = dict.fromkeys(item, REDACTED)
            else:
                result[key] = redact(item)
        return result
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def hide_recording_urls(value: Any, *, inside_recording: bool = False) -> Any:
    """A copy of a stored payload without recording and pcap URLs (``recordingUrl``,
    ``stereoRecordingUrl``, ``pcapUrl``, the URLs under ``artifact.recording``…): for keys that may
    read calls but not recordings."""
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if isinstance(item, str) and (
                RECORDING_URL.search(name) or (inside_recording and name.lower().endswith("url"))
            ):
                continue
            result[key] = hide_recording_urls(item, inside_recording=inside_recording or name.lower() == "recording")
        return result
    if isinstance(value, list):
        return [hide_recording_urls(item, inside_recording=inside_recording) for item in value]
    return value
