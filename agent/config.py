"""Agent configuration: one YAML file, validated once at start-up, plus env overrides.

`CRM_AGENT_<SECTION>__<KEY>=value` overrides any setting (`CRM_AGENT_HTTP__PORT=9090`),
`CRM_AGENT_<KEY>` a top-level one (`CRM_AGENT_LOG_LEVEL=DEBUG`); an unknown variable is an error;
the shortcuts `CRM_AGENT_TOKEN`, `CRM_AGENT_WEBHOOK_SECRET`, `CRM_AGENT_AMI_SECRET`,
`CRM_AGENT_RECORDING_SECRET` and `CRM_AGENT_STORE_URL` keep secrets out of the file.
Relative paths are resolved against the directory of the config file.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from agent.core.rules import DEFAULT_MODULES

log = logging.getLogger("agent.config")


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreConfig(Section):
    url: str = "sqlite:///var/agent.db"
    connect_timeout_s: float = Field(10.0, gt=0)
    """How long to wait for PostgreSQL to accept a connection (start-up fails after it)."""


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class HttpConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token: SecretStr | None = None
    token_file: Path = Path("var/token")
    webhook_secret: SecretStr | None = None
    pbx_allow: list[IpNetwork] = Field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.0/8"),
                                 ipaddress.ip_network("::1/128")])
    max_body_bytes: int = Field(1_048_576, ge=1024)
    public_url: str = "http://127.0.0.1:8080"
    max_connections: int | None = Field(None, ge=1)
    """Open HTTP connections at most (default: a quarter of the open-file limit, ≤ 1024);
    past it a new connection gets a JSON 503 and is closed."""
    idle_timeout_s: float = Field(15.0, gt=0)
    """A connection that sends no request (or only part of one) for this long is closed."""


class AgiConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(4573, ge=0, le=65535)
    header_timeout_s: float = Field(2.0, gt=0)
    set_callerid_name: bool = False
    allow: list[IpNetwork] = Field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.0/8"),
                                 ipaddress.ip_network("::1/128")])
    """Peers FastAGI answers; others are closed unread. Must be set to listen beyond loopback."""


class AmiConfig(Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    username: str = "agent"
    secret: SecretStr = SecretStr("")
    reconnect_max_s: float = Field(30.0, gt=0)
    grace_s: float = Field(2.0, ge=0)
    max_idle_s: float = Field(4 * 3600.0, gt=0)
    """A call with no AMI event for this long is journaled although no Hangup came (a lost
    event, or channels Asterisk could not be asked about after a reconnect)."""
    internal_extension: str = r"^\d{2,6}$"


class RulesConfig(Section):
    dir: Path = Path("rules")
    """Every feature's rules file: routing.yaml, journal.yaml, intake.yaml, scoring.yaml,
    workflows.yaml (one directory, one watcher, one reload)."""
    watch: bool = True
    """Reload a file when it is saved (SIGHUP and `POST /admin/rules/reload` work anyway)."""


class RoutingConfig(Section):
    deadline_ms: int = Field(300, ge=10, le=10_000)
    cache_ttl_s: float = Field(60.0, ge=0)
    negative_ttl_s: float = Field(10.0, ge=0)
    stale_ttl_s: float = Field(3600.0, ge=0)
    cache_size: int = Field(100_000, ge=0)
    breaker_failures: int = Field(5, ge=1)
    breaker_reset_s: float = Field(10.0, gt=0)
    decision_log_size: int = Field(10_000, ge=0)


class CrmConfig(Section):
    modules: list[str] = Field(default_factory=lambda: list(DEFAULT_MODULES))


class RecordingsConfig(Section):
    dir: Path = Path("var/recordings")
    secret: SecretStr | None = None
    link_ttl_s: int = Field(7 * 86400, ge=60)


class OutboxConfig(Section):
    batch: int = Field(20, ge=1)
    max_attempts: int = Field(20, ge=1)
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)
    poll_s: float = Field(1.0, gt=0)
    lease_s: float = Field(60.0, gt=0)
    """A claimed row whose claimer died (kill -9) is claimed again after this long."""
    agent_id: str | None = Field(None, min_length=1, max_length=200)
    """Names this agent on the rows it claims (default: host name and HTTP port), so that
    after a crash it takes its own rows back at once; give each agent its own."""
    deliver: bool = True
    """False: accept and store events but apply nothing (CRM maintenance, or another agent
    sharing the PostgreSQL store delivers them)."""


class Config(Section):
    region: str = Field("FR", min_length=2, max_length=2)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    store: StoreConfig = Field(default_factory=lambda: StoreConfig())
    http: HttpConfig = Field(default_factory=lambda: HttpConfig())
    agi: AgiConfig = Field(default_factory=lambda: AgiConfig())
    ami: AmiConfig = Field(default_factory=lambda: AmiConfig())
    rules: RulesConfig = Field(default_factory=lambda: RulesConfig())
    routing: RoutingConfig = Field(default_factory=lambda: RoutingConfig())
    crm: CrmConfig = Field(default_factory=lambda: CrmConfig())
    recordings: RecordingsConfig = Field(default_factory=lambda: RecordingsConfig())
    outbox: OutboxConfig = Field(default_factory=lambda: OutboxConfig())
    base_dir: Path = Field(default=Path("."), exclude=True)

    def path(self, value: Path) -> Path:
        """Resolve a configured path against the config file's directory."""
        return value if value.is_absolute() else self.base_dir / value

    @property
    def store_url(self) -> str:
        url = self.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            return prefix + str(self.path(Path(url[len(prefix):])))
        return url


SHORTCUTS = {
    "CRM_AGENT_TOKEN": ("http", "token"),
    "CRM_AGENT_WEBHOOK_SECRET": ("http", "webhook_secret"),
    "CRM_AGENT_AMI_SECRET": ("ami", "secret"),
    "CRM_AGENT_RECORDING_SECRET": ("recordings", "secret"),
    "CRM_AGENT_STORE_URL": ("store", "url"),
}
RENAMED = {("routing", "rules_dir"): ("rules", "dir"), ("routing", "watch"): ("rules", "watch")}
"""Settings that moved, old name -> new; the old one still works, with a warning."""
PREFIX = "CRM_AGENT_"
NOT_SETTINGS = ("CRM_AGENT_CONFIG", "CRM_AGENT_TEST_")
TEXT = (str, SecretStr, SecretStr | None, Path)
"""`CRM_AGENT_CONFIG` names the file; `CRM_AGENT_TEST_*` belong to the test suite."""


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested settings from `CRM_AGENT_*` variables (values are parsed as YAML scalars).

    `CRM_AGENT_<KEY>` sets a top-level key (`CRM_AGENT_LOG_FORMAT=text`),
    `CRM_AGENT_<SECTION>__<KEY>` a section's. A variable that names no setting is a
    `ConfigError` naming it: a typo must not be ignored silently."""
    tree: dict[str, Any] = {}
    for name, keys in env_settings(environ).items():
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = _value(name, keys, environ[name])
    return tree


def env_settings(environ: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Each `CRM_AGENT_*` variable of `environ` and the setting it names."""
    return {name: SHORTCUTS.get(name) or setting_path(name) for name in environ
            if name.startswith(PREFIX) and not name.startswith(NOT_SETTINGS)}


def setting_path(name: str) -> tuple[str, ...]:
    """The setting a `CRM_AGENT_*` variable names, checked against the model."""
    keys = tuple(part.lower() for part in name[len(PREFIX):].split("__"))
    if keys in RENAMED:
        log.warning("%s is deprecated: use %s", name, env_name(".".join(RENAMED[keys])))
        keys = RENAMED[keys]
    model: type[BaseModel] | None = Config
    for depth, key in enumerate(keys):
        field = None if model is None else model.model_fields.get(key)
        if field is None or field.exclude:
            where = ".".join(keys[: depth + 1])
            raise ConfigError(f"{name}: no such setting ({where}); see agent.example.yaml")
        kind = field.annotation
        model = kind if isinstance(kind, type) and issubclass(kind, Section) else None
    if model is not None:
        raise ConfigError(f"{name}: {'.'.join(keys)} is a section; name one of its keys "
                          f"({name}__KEY)")
    return keys


def env_name(setting: str) -> str:
    """The variable that overrides a setting: `http.port` -> `CRM_AGENT_HTTP__PORT`."""
    return PREFIX + setting.upper().replace(".", "__")


def cannot_listen(exc: OSError, what: str, host: str, port: int, setting: str) -> ConfigError:
    """A listener that cannot bind, as one line naming the setting to change."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.EADDRINUSE:
        reason = "the port is already in use"
    return ConfigError(f"cannot listen for {what} on {host}:{port}: {reason}; set {setting} "
                       f"(or {env_name(setting)}) to a free port")


def _value(name: str, keys: tuple[str, ...], raw: str) -> Any:
    """Text for text settings (`CRM_AGENT_REGION=NO` is Norway, not YAML's false), else
    the YAML scalar or flow list (`[10.0.0.0/8]`)."""
    model: type[BaseModel] = Config
    for key in keys[:-1]:
        model = model.model_fields[key].annotation  # type: ignore[assignment]
    if model.model_fields[keys[-1]].annotation in TEXT:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"{name}: not a valid YAML value") from None


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read `path` (optional), apply env overrides, validate. Raises ConfigError."""
    data: dict[str, Any] = {}
    source = str(path) if path else "<defaults>"
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{source}: cannot read config: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping")
        data = loaded
    environ = os.environ if environ is None else environ
    data = merge(renamed(data, source), env_overrides(environ))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        origins = {keys: name for name, keys in env_settings(environ).items()}
        raise ConfigError(f"{source}: {describe(exc, origins)}") from None
    config.base_dir = path.parent.resolve() if path else Path.cwd()
    return config


def renamed(data: dict[str, Any], source: str) -> dict[str, Any]:
    """`data` with each moved setting (`RENAMED`) under its new name."""
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    for (section, key), (new_section, new_key) in RENAMED.items():
        old = out.get(section)
        if not isinstance(old, dict) or key not in old:
            continue
        new = out.setdefault(new_section, {})
        if not isinstance(new, dict) or new_key in new:
            raise ConfigError(f"{source}: {section}.{key} and {new_section}.{new_key} are the "
                              f"same setting: keep {new_section}.{new_key}")
        log.warning("%s: %s.%s is deprecated: use %s.%s", source, section, key, new_section,
                    new_key)
        new[new_key] = old.pop(key)
    return out


def describe(exc: ValidationError,
             origins: Mapping[tuple[str, ...], str] | None = None) -> str:
    """One line per error: `where: message`, naming the variable a value came from."""
    parts = []
    for error in exc.errors():
        loc = tuple(str(p) for p in error["loc"])
        where = ".".join(loc) or "(top level)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        name = (origins or {}).get(loc[:2]) or (origins or {}).get(loc[:1])
        parts.append(f"{where}: {message}" + (f" (from {name})" if name else ""))
    return "; ".join(parts)
