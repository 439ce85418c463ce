"""Settings of the site tools (registry-redcap-sync, registry-submit): a TOML file, overridden
by the environment. One file may serve both tools.

Secrets (the two API tokens and the site secret) come from the environment, or from a config
file that only its owner may read; never from the command line, where `ps` would show them.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from registry.core.identifiers import passes_firewall
from registry.core.site_fields import (
    DATE_ORDERS, DEFAULT_DATE_ORDER, PUSH_BATCH_SIZE, SITE_SECRET_MIN_LENGTH, SUBJECT_PREFIX,
)

SECRETS = ("redcap_api_token", "registry_token", "site_secret")
# Environment variable of each setting that may come from the environment.
ENVIRONMENT = {
    "redcap_api_url": "REDCAP_API_URL",
    "redcap_api_token": "REDCAP_API_TOKEN",
    "registry_url": "REGISTRY_URL",
    "registry_token": "REGISTRY_TOKEN",
    "site_secret": "REGISTRY_SITE_SECRET",
    "state_dir": "REGISTRY_SYNC_STATE_DIR",
}
_TOKEN = re.compile(r"^[0-9A-Fa-f]{32}$")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the setting, never its value."""


@dataclass
class SiteConfig:
    """What every site tool needs: the registry, the site secret, batches and timeouts.
    Secrets are kept out of repr()."""

    registry_url: str = ""
    state_dir: Path = Path("/var/lib/registry-redcap-sync")
    subject_prefix: str = ""
    push_batch_size: int = PUSH_BATCH_SIZE
    timeout_seconds: float = 60.0
    retries: int = 4
    backoff_seconds: float = 2.0
    registry_token: str = field(default="", repr=False)
    site_secret: str = field(default="", repr=False)

    def _require(self, *names: str) -> None:
        for name in names:
            if not getattr(self, name):
                where = ENVIRONMENT.get(name, name)
                raise ConfigError(f"{name} is not set (config file key {name} or environment "
                                  f"variable {where})")

    def check(self) -> None:
        """Refuse a configuration that cannot work, naming the setting."""
        self._require("registry_url", "registry_token", "site_secret")
        if len(self.site_secret) < SITE_SECRET_MIN_LENGTH:
            raise ConfigError(f"REGISTRY_SITE_SECRET must be at least {SITE_SECRET_MIN_LENGTH} "
                              "characters (e.g. "
                              "`openssl rand -hex 32`); keep it at the site, never change it")
        if not SUBJECT_PREFIX.fullmatch(self.subject_prefix):
            raise ConfigError("subject_prefix must be a few letters, optionally ending in '-', "
                              "'_' or '.' (e.g. TOR-), so that subject ids stay valid")
        # A prefix the registry's firewall reads as part of an identifier (www-, http_) would
        # have every pseudonym refused: say so now, not on every record.
        if not passes_firewall(self.subject_prefix + "abcdefghijklmnop"):
            raise ConfigError("subject_prefix reads as part of an identifier (a URL or e-mail "
                              "word such as www, http or at): choose other letters")
        if not 1 <= self.push_batch_size <= 1000:
            raise ConfigError("push_batch_size must be 1 to 1000")


@dataclass
class SyncConfig(SiteConfig):
    """Everything one sync run needs."""

    redcap_api_url: str = ""
    redcap_timezone: str = ""  # the REDCap server's zone; "" = this machine's
    batch_size: int = 100
    pause_seconds: float = 0.5
    overlap_minutes: int = 5
    redcap_api_token: str = field(default="", repr=False)

    def check(self) -> None:
        """Refuse a configuration that cannot work, naming the setting."""
        self._require("redcap_api_url", "registry_url", *SECRETS)
        super().check()
        if not self.redcap_api_url.endswith("/api/"):
            raise ConfigError("redcap_api_url must be the API endpoint, ending in /api/")
        if not _TOKEN.match(self.redcap_api_token):
            raise ConfigError("REDCAP_API_TOKEN must be a REDCap API token: 32 hexadecimal "
                              "characters")
        if self.redcap_timezone:
            try:
                ZoneInfo(self.redcap_timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigError("redcap_timezone must be an IANA time zone, e.g. "
                                  "America/Toronto") from None
        if not 1 <= self.batch_size <= 1000:
            raise ConfigError("batch_size and push_batch_size must be 1 to 1000")


@dataclass
class SubmitConfig(SiteConfig):
    """Everything one registry-submit run needs."""

    state_dir: Path = Path(".")  # where reports go by default
    date_order: str = DEFAULT_DATE_ORDER  # how this site writes dates such as 03/04/2019

    def check(self) -> None:
        """Refuse a configuration that cannot work, naming the setting."""
        super().check()
        if self.date_order not in DATE_ORDERS:
            raise ConfigError("date_order must be one of: " + ", ".join(DATE_ORDERS))


def _file_settings(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"the config file {path} is not valid TOML: {error}") from None
    # One file may serve both tools: the settings of either are known.
    known = {item.name for kind in (SyncConfig, SubmitConfig) for item in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown settings in {path}: {', '.join(unknown)}")
    if any(name in data for name in SECRETS) and \
            path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} holds secrets but others may read it: chmod 600 {path}")
    return data


def load_config(path: Path | None, environ: dict[str, str] | None = None, *,
                kind: type[SiteConfig] = SyncConfig, **overrides: Any) -> Any:
    """The settings of a run of `kind` (the sync's by default): defaults < config file <
    environment < command-line options."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = _file_settings(path) if path else {}
    for name, variable in ENVIRONMENT.items():
        if environ.get(variable):
            values[name] = environ[variable]
    values.update({name: value for name, value in overrides.items() if value is not None})
    config = kind()
    for item in fields(kind):
        if item.name not in values:
            continue
        default = getattr(config, item.name)
        try:
            value = type(default)(values[item.name])
        except (TypeError, ValueError):
            raise ConfigError(f"setting {item.name} has the wrong type") from None
        setattr(config, item.name, value)
    config.check()
    return config
