"""Typed configuration, read from ``SWITCHBOARD_*`` environment variables (and an optional ``.env``).

Built once by the CLI or a test and handed to :func:`service.app.create_app`; nothing reads the
environment at import time.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, PositiveFloat, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.durations import parse_duration

STORAGE_SCHEMES = ("file", "memory", "s3")
ENV_PREFIX = "SWITCHBOARD_"
# Variables of the test suite and the benchmarks, not of the service: no warning for them.
_NOT_SETTINGS_PREFIXES = ("SWITCHBOARD_TEST_", "SWITCHBOARD_BENCH_")
# Outbound webhooks: seconds before attempt 2, 3, …; the last step repeats until the maximum age runs out.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800)
DEFAULT_MAX_AGE_SECONDS = 24 * 3600.0


class ConfigurationError(ValueError):
    """A configuration that cannot work; start-up refuses it with this message."""


class Settings(BaseSettings):
    """Every knob of the service. Field names map to ``SWITCHBOARD_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./data/switchboard.db"
    storage_url: str = "file://./data/recordings"
    vapi_base_url: str = "https://api.vapi.ai"
    vapi_api_key: SecretStr | None = None
    vapi_public_key: SecretStr | None = None
    vapi_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_secret: SecretStr | None = None
    webhook_secret_header: str = "X-Vapi-Secret"  # noqa: S105 - a header name, not a secret
    webhook_hmac_secret: SecretStr | None = None
    webhook_allow_private: bool = False
    public_url: str | None = None
    admin_api_key: SecretStr | None = None
    rules_file: Path | None = None
    listen_sample_rate: int = Field(default=16000, gt=0)
    listen_channels: int = Field(default=2, ge=1, le=2)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    auto_migrate: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"
    # uvicorn's access log (one line per request, query strings masked); off by default: it costs per request.
    access_log: bool = False
    # Listen sessions: how long a session keeps trying to (re)connect before it gives up.
    listen_connect_timeout_seconds: float = Field(default=120.0, gt=0)
    # A socket silent this long after the call was answered is treated as dropped.
    listen_idle_timeout_seconds: float = Field(default=10.0, gt=0)
    # Replicas: a live call's recording lease lasts this long and is renewed every third of it.
    listen_lease_seconds: float = Field(default=6.0, ge=1)
    listen_max_frame_bytes: int = Field(default=1024 * 1024, gt=0)
    # Listen sockets are read at most this often (ms): frames gather in the kernel meanwhile, one wake-up
    # of the event loop per interval instead of one per 20 ms frame. Delays live fan-out by as much.
    listen_read_interval_ms: int = Field(default=200, ge=0, le=500)
    shutdown_timeout_seconds: float = Field(default=10.0, gt=0)
    # Replicas share live frames and call changes through Redis pub/sub (redis://HOST:PORT/DB); unset:
    # one process, in memory.
    redis_url: str | None = None
    # Conversation analytics: a voice activity detector over each finalised recording (service.analytics).
    analytics_enabled: bool = True
    analytics_vad_mode: int = Field(default=2, ge=0, le=3)  # WebRTC VAD aggressiveness
    analytics_poll_seconds: float = Field(default=2.0, gt=0)
    # Outbound webhooks: seconds before each retry (JSON list; the last step repeats, with full jitter)
    # until a delivery is this old, then it is abandoned.
    webhook_retry_delays: tuple[PositiveFloat, ...] = Field(default=DEFAULT_RETRY_DELAYS, min_length=1)
    webhook_retry_max_age_seconds: float = Field(default=DEFAULT_MAX_AGE_SECONDS, gt=0)
    # HMAC parity with Vapi's webhook credentials (contract section 9).
    webhook_hmac_algorithm: Literal["sha256", "sha512", "sha1"] = "sha256"
    webhook_hmac_encoding: Literal["hex", "base64"] = "hex"
    webhook_hmac_signature_header: str = "x-signature"
    webhook_hmac_timestamp_header: str = "x-timestamp"
    webhook_hmac_signature_prefix: str = ""
    webhook_hmac_payload_format: Literal["{timestamp}.{body}", "{body}"] = "{timestamp}.{body}"
    # Vapi retries a server message that failed this many times (``server.backoffPlan`` on placed calls).
    webhook_backoff_max_retries: int = Field(default=3, ge=0, le=10)
    # The tap (contract section 9): the org-wide upstream, its extra headers, one attempt's time limit.
    forward_url: str | None = None
    forward_headers: dict[str, str] = Field(default_factory=dict)
    # Below Vapi's 7.5 s for an assistant-request, so that Switchboard still answers in time.
    forward_timeout_seconds: float = Field(default=7.0, gt=0, le=30)
    # How long an assistant's or phone number's server (GET /assistant/{id}) is reused.
    upstream_cache_seconds: float = Field(default=60.0, ge=0)

    # Recordings lifecycle (service.lifecycle): calls that ended longer ago than ``retention`` (a duration:
    # "90d", "12h", "3s"; unset: kept) are erased, except held ones, by a sweep every so many seconds.
    retention: float | None = None
    retention_sweep_seconds: float = Field(default=3600.0, gt=0)
    # Outbound webhook deliveries and the tap's forwards, once delivered or abandoned, are deleted this
    # long after their last attempt (by the same sweep); unset or empty: kept forever.
    delivery_history: float | None = 30 * 86400.0
    # A replica's claim on a call it erases: an erasure cut short by a crash is finished by the sweep of
    # any replica once the claim has lapsed (tombstones are looked for at least this often).
    erasure_claim_seconds: float = Field(default=60.0, ge=1)
    # "flac": finished recordings are re-encoded losslessly and their raw segments removed.
    archive_format: Literal["pcm", "flac"] = "pcm"
    # Vapi's own recording, kept (service.recordings.vapi_copy): the first retry of a failed download
    # (doubling up to an hour, eight attempts).
    vapi_recording_retry_seconds: float = Field(default=5.0, gt=0, le=3600)
    # Whether Vapi's own stereo recording is copied into Switchboard's storage after each call (0: not,
    # e.g. under a zero-data-retention policy, or when the live recording is all you keep).
    vapi_recording_copy: bool = True
    # Catching up (service.calls.catchup): how often Vapi's calls created since the last seen one are
    # listed and imported (also at start-up); 0: never. Needs SWITCHBOARD_VAPI_API_KEY.
    vapi_catch_up_seconds: float = Field(default=300.0, ge=0)

    @field_validator("retention", "delivery_history", mode="before")
    @classmethod
    def _parse_keep_for(cls, value: object) -> float | None:
        if value is None or value == "":
            return None
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError("must be longer than zero (unset it to keep forever)")
        return seconds

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL {value!r}: use redis://HOST:PORT/DB or rediss://…")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(
                f"unsupported database URL scheme {scheme!r}: use sqlite+aiosqlite:///PATH "
                "or postgresql+asyncpg://USER@HOST/DB"
            )
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in STORAGE_SCHEMES:
            raise ValueError(f"unknown storage scheme {scheme!r}: use file://PATH, s3://BUCKET/PREFIX or memory://")
        return value

    @field_validator("vapi_base_url", "public_url", "forward_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value.rstrip("/")

    @field_validator("rules_file")
    @classmethod
    def _check_rules_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"rules file {str(value)!r} does not exist or is not a file")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        """``serve`` migrates by itself on the embedded default, or when asked to."""
        return self.is_sqlite or self.auto_migrate

    @property
    def webhook_url(self) -> str | None:
        return f"{self.public_url}/webhooks/vapi" if self.public_url else None


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into one readable message."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            env = f"SWITCHBOARD_{field.upper()}" if error["loc"] else field
            lines.append(f"  {env}: {error['msg']}")
        raise ConfigurationError("invalid configuration:\n" + "\n".join(lines)) from None


def variable_names() -> list[str]:
    """Every ``SWITCHBOARD_*`` variable the service reads."""
    return [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields]


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per ``SWITCHBOARD_*`` variable that is set but read by nothing (a misspelling is
    otherwise silently ignored), naming the closest valid variable when one is close."""
    environ = os.environ if environ is None else environ
    known = variable_names()
    warnings = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings matches names case-insensitively
        if not upper.startswith(ENV_PREFIX) or upper in known or upper.startswith(_NOT_SETTINGS_PREFIXES):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"{name} is set but is not a Switchboard setting: it is ignored{hint}")
    return warnings
