"""Typed configuration, read from ``SWITCHBOARD_*`` environment variables (and an optional ``.env``).

Built once by the CLI or a test and handed to :func:`service.app.create_app`; nothing reads the
environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, PositiveFloat, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.deliveries.retry import DEFAULT_MAX_AGE_SECONDS, DEFAULT_RETRY_DELAYS

STORAGE_SCHEMES = ("file", "memory", "s3")


class ConfigurationError(ValueError):
    """A configuration that cannot work; start-up refuses it with this message."""


class Settings(BaseSettings):
    """Every knob of the service. Field names map to ``SWITCHBOARD_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

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
    # Conversation analytics: a voice activity detector over each finalised recording (service.analytics).
    analytics_enabled: bool = True
    analytics_vad_mode: int = Field(default=2, ge=0, le=3)  # WebRTC VAD aggressiveness
    analytics_poll_seconds: float = Field(default=2.0, gt=0)
    # Outbound webhooks: seconds before each retry (JSON list; the last step repeats, with full jitter)
    # until a delivery is this old, then it is abandoned.
    webhook_retry_delays: tuple[PositiveFloat, ...] = Field(default=DEFAULT_RETRY_DELAYS, min_length=1)
    webhook_retry_max_age_seconds: float = Field(default=DEFAULT_MAX_AGE_SECONDS, gt=0)

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

    @field_validator("vapi_base_url", "public_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_rules_file(self) -> Settings:
        if self.rules_file is not None and not self.rules_file.is_file():
            raise ValueError(f"rules file {str(self.rules_file)!r} does not exist or is not a file")
        return self

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
