"""Settings of registry-redcap-sync: a TOML file, overridden by the environment.

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

from registry.schemas.identifiers import passes_firewall

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
class SyncConfig:
    """Everything one run needs. Secrets are kept out of repr()."""

    redcap_api_url: str = ""
    registry_url: str = ""
    state_dir: Path = Path("/var/lib/registry-redcap-sync")
    redcap_timezone: str = ""  # the REDCap server's zone; "" = this machine's
    subject_prefix: str = ""
    batch_size: int = 100
    push_batch_size: int = 500
    pause_seconds: float = 0.5
    timeout_seconds: float = 60.0
    retries: int = 4
    backoff_seconds: float = 2.0
    overlap_minutes: int = 5
    redcap_api_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)
    site_secret: str = field(default="", repr=False)

    def check(self) -> None:
        """Refuse a configuration that cannot work, naming the setting."""
        for name in ("redcap_api_url", "registry_url", *SECRETS):
            if not getattr(self, name):
                where = ENVIRONMENT.get(name, name)
                raise ConfigError(f"{name} is not set (config file key {name} or environment "
                                  f"variable {where})")
        if not self.redcap_api_url.endswith("/api/"):
            raise ConfigError("redcap_api_url must be the API endpoint, ending in /api/")
        if not _TOKEN.match(self.redcap_api_token):
            raise ConfigError("REDCAP_API_TOKEN must be a REDCap API token: 32 hexadecimal "
                              "characters")
        if len(self.site_secret) < 32:
            raise ConfigError("REGISTRY_SITE_SECRET must be at least 32 characters (e.g. "
                              "`openssl rand -hex 32`); keep it at the site, never change it")
        if not re.fullmatch(r"(?:[A-Za-z]{1,24}[-_.]?)?", self.subject_prefix):
            raise ConfigError("subject_prefix must be a few letters, optionally ending in '-', "
                              "'_' or '.' (e.g. TOR-), so that subject ids stay valid")
        # A prefix the registry's firewall reads as part of an identifier (www-, http_) would
        # have every pseudonym refused: say so now, not on every record.
        if not passes_firewall(self.subject_prefix + "abcdefghijklmnop"):
            raise ConfigError("subject_prefix reads as part of an identifier (a URL or e-mail "
                              "word such as www, http or at): choose other letters")
        if self.redcap_timezone:
            try:
                ZoneInfo(self.redcap_timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigError("redcap_timezone must be an IANA time zone, e.g. "
                                  "America/Toronto") from None
        if not 1 <= self.batch_size <= 1000 or not 1 <= self.push_batch_size <= 1000:
            raise ConfigError("batch_size and push_batch_size must be 1 to 1000")


def _file_settings(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"the config file {path} is not valid TOML: {error}") from None
    known = {item.name for item in fields(SyncConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown settings in {path}: {', '.join(unknown)}")
    if any(name in data for name in SECRETS) and \
            path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} holds secrets but others may read it: chmod 600 {path}")
    return data


def load_config(path: Path | None, environ: dict[str, str] | None = None,
                **overrides: Any) -> SyncConfig:
    """The settings of a run: defaults < config file < environment < command-line options."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = _file_settings(path) if path else {}
    for name, variable in ENVIRONMENT.items():
        if environ.get(variable):
            values[name] = environ[variable]
    values.update({name: value for name, value in overrides.items() if value is not None})
    config = SyncConfig()
    for item in fields(SyncConfig):
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
