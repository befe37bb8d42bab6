from __future__ import annotations

from pathlib import Path

import pytest

from agent.app import resolve_token
from agent.config import ConfigError, load


def test_example_config_is_valid() -> None:
    config = load(Path(__file__).parents[2] / "agent.example.yaml", environ={})
    assert config.http.host == "127.0.0.1"
    assert config.store_url.endswith("/var/agent.db")


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("http:\n  prot: 8080\n")
    with pytest.raises(ConfigError, match=r"agent\.yaml: http\.prot: unknown key"):
        load(path, environ={})


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("routing:\n  deadline_ms: fast\n")
    with pytest.raises(ConfigError, match=r"routing\.deadline_ms"):
        load(path, environ={})


def test_broken_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("http: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load(path, environ={})


def test_env_overrides_and_secret_shortcuts() -> None:
    config = load(None, environ={"CRM_AGENT_HTTP__PORT": "9090", "CRM_AGENT_TOKEN": "s3cret",
                                 "CRM_AGENT_ROUTING__DEADLINE_MS": "250", "HOME": "/x"})
    assert config.http.port == 9090
    assert config.routing.deadline_ms == 250
    assert config.http.token is not None and config.http.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)


def test_token_required_beyond_loopback() -> None:
    config = load(None, environ={"CRM_AGENT_HTTP__HOST": "0.0.0.0"})
    with pytest.raises(ConfigError, match=r"set http\.token"):
        resolve_token(config)


def test_loopback_generates_a_private_token_once(tmp_path: Path) -> None:
    config = load(None, environ={"CRM_AGENT_HTTP__TOKEN_FILE": str(tmp_path / "var/token")})
    first = resolve_token(config)
    assert len(first) >= 32
    assert resolve_token(config) == first
    assert (tmp_path / "var/token").stat().st_mode & 0o777 == 0o600


def test_top_level_settings_from_the_environment() -> None:
    config = load(None, environ={"CRM_AGENT_LOG_FORMAT": "text", "CRM_AGENT_LOG_LEVEL": "DEBUG",
                                 "CRM_AGENT_EVENT_LOOP": "asyncio", "CRM_AGENT_REGION": "NO"})
    assert (config.log_format, config.log_level) == ("text", "DEBUG")
    assert (config.event_loop, config.region) == ("asyncio", "NO")


def test_a_bad_top_level_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"log_format: .*\(from CRM_AGENT_LOG_FORMAT\)"):
        load(None, environ={"CRM_AGENT_LOG_FORMAT": "xml"})


@pytest.mark.parametrize("name", ["CRM_AGENT_LOGFORMAT", "CRM_AGENT_HTTP__PROT",
                                  "CRM_AGENT_NOSECTION__PORT", "CRM_AGENT_HTTP",
                                  "CRM_AGENT_BASE_DIR", "CRM_AGENT_HTTP__PORT__X"])
def test_an_unknown_variable_is_an_error_naming_it(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(None, environ={name: "1"})


def test_the_config_file_and_test_variables_are_not_settings() -> None:
    load(None, environ={"CRM_AGENT_CONFIG": "/etc/agent.yaml",
                        "CRM_AGENT_TEST_PG": "postgresql://x"})


def test_list_settings_from_the_environment() -> None:
    config = load(None, environ={"CRM_AGENT_HTTP__PBX_ALLOW": "[10.0.0.0/8, 192.0.2.7/32]"})
    assert [str(net) for net in config.http.pbx_allow] == ["10.0.0.0/8", "192.0.2.7/32"]


def test_the_rules_directory_under_its_old_name_still_works(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("routing: {rules_dir: /srv/rules, watch: false, deadline_ms: 500}\n")
    config = load(path, environ={})
    assert (config.rules.dir, config.rules.watch) == (Path("/srv/rules"), False)
    assert config.routing.deadline_ms == 500
    assert "routing.rules_dir is deprecated: use rules.dir" in caplog.text
    env = load(None, environ={"CRM_AGENT_ROUTING__RULES_DIR": "/etc/rules"})
    assert env.rules.dir == Path("/etc/rules")
    assert "CRM_AGENT_ROUTING__RULES_DIR is deprecated: use CRM_AGENT_RULES__DIR" in caplog.text


def test_a_setting_under_its_old_and_new_name_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("rules: {dir: a}\nrouting: {rules_dir: b}\n")
    with pytest.raises(ConfigError, match=r"routing\.rules_dir and rules\.dir are the same "
                                          r"setting: keep rules\.dir"):
        load(path, environ={})
