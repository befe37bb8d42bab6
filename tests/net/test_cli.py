"""`crm-agent check-rules` and `crm-agent route` as an admin runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def crm_agent(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "agent.yaml"
    if not config.exists():
        config.write_text(f"store: {{url: 'sqlite:///{tmp_path / 'crm.db'}'}}\n"
                          f"rules: {{dir: '{REPO / 'rules'}'}}\n")
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_check_rules_accepts_the_sample_and_names_errors(tmp_path: Path) -> None:
    ok = crm_agent(tmp_path, "check-rules")
    assert ok.returncode == 0, ok.stderr
    for name in ("routing", "journal", "intake", "scoring", "workflows"):
        assert f"rules/{name}.yaml: OK" in ok.stdout
    broken = tmp_path / "broken"
    shutil.copytree(REPO / "rules", broken)
    text = (broken / "routing.yaml").read_text().replace("op: closed", "op: shut", 1)
    (broken / "routing.yaml").write_text(text)
    bad = crm_agent(tmp_path, "check-rules", str(broken))
    assert bad.returncode == 1
    assert "routing.yaml:" in bad.stderr and "rule 'office closed'" in bad.stderr
    assert "shut" in bad.stderr
    text = (broken / "journal.yaml").read_text().replace("missed_task_due:", "missed_due:", 1)
    (broken / "journal.yaml").write_text(text)
    both = crm_agent(tmp_path, "check-rules", str(broken))
    assert "journal.yaml" in both.stderr and "missed_due" in both.stderr
    assert both.stderr.count("crm-agent:") == 2


def test_route_prints_decision_and_trace(tmp_path: Path) -> None:
    closed = crm_agent(tmp_path, "route", "--caller", "0611111111", "--did", "01 40 00 00 00",
                       "--at", "2026-12-25T10:00:00+01:00")
    assert closed.returncode == 0, closed.stderr
    assert "destination: voicemail:100" in closed.stdout
    assert "rule:        office closed" in closed.stdout
    assert "MATCH office closed: schedule office is closed" in closed.stdout
    anonymous = crm_agent(tmp_path, "route", "--caller", "anonymous",
                          "--at", "2026-12-01T10:00:00+01:00")
    assert "caller:      anonymous" in anonymous.stdout
    bad_time = crm_agent(tmp_path, "route", "--caller", "0611111111", "--at", "noon")
    assert bad_time.returncode == 2 and "not an ISO time" in bad_time.stderr


def test_unknown_config_key_stops_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("routing: {deadline: 300}\n")
    result = crm_agent(tmp_path, "check-rules")
    assert result.returncode == 2
    assert "routing.deadline: unknown key" in result.stderr
