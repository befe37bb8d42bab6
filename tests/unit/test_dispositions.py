"""Call-center outcomes (§8.2): reasons per outcome and the lead changes they make."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.leads.dispositions import (
    REASONS,
    DispositionError,
    already_applied,
    effects,
    parse,
    parse_reason,
)

NOW = datetime(2026, 4, 1, tzinfo=UTC)


@pytest.mark.parametrize(("outcome", "raw", "canonical"), [
    ("INEXPLOITABLE", "ne parle pas francais", "NE PARLE PAS FRANÇAIS"),
    ("INEXPLOITABLE", "Ne  Parle Pas Français", "NE PARLE PAS FRANÇAIS"),
    ("INEXPLOITABLE", "wrong_number_system", "WRONG NUMBER SYSTEM"),
    ("ACCORD", "TRA", "TRANSFERT ABOUTI"),
    ("ACCORD", "transfert non abouti (TRNA)", "TRANSFERT NON ABOUTI"),
    ("REFUS", "pas intéressé", "PAS INTERESSE"),
])
def test_reasons_match_ignoring_case_accents_and_abbreviations(outcome: str, raw: str,
                                                               canonical: str) -> None:
    assert parse_reason(outcome, raw) == canonical  # type: ignore[arg-type]


@pytest.mark.parametrize("outcome", list(REASONS))
def test_a_reason_of_another_outcome_names_the_allowed_ones(outcome: str) -> None:
    other = next(reasons[0] for name, reasons in REASONS.items() if name != outcome)
    with pytest.raises(DispositionError) as caught:
        parse_reason(outcome, other)  # type: ignore[arg-type]
    assert caught.value.code == "invalid-reason"
    assert ", ".join(REASONS[outcome]) in str(caught.value)


def test_parse_accepts_seed_names_and_nested_or_flat_free_fields() -> None:
    result = parse({"factoryprojectid": "P000001-ABCDEF", "outcome": " accord ",
                    "motif": "rdv physique", "suivi_par": "201", "budget_max": "1",
                    "fields": {"action": "rappel"}})
    assert (result.project_id, result.outcome, result.reason, result.followed_by) == (
        "P000001-ABCDEF", "ACCORD", "RDV PHYSIQUE", "201")
    assert result.values == {"budget_max": "1", "action": "rappel"}
    assert parse({"project_id": "p", "outcome": "ACCORD", "reason": "TRA",
                  "followed_by": "201", "commercial": "999"}).followed_by == "201"


@pytest.mark.parametrize(("body", "needle"), [
    ({"outcome": "ACCORD", "reason": "TRA", "followed_by": "1"}, "project_id: required"),
    ({"project_id": "p", "outcome": "OK", "reason": "TRA"}, "not one of ACCORD"),
    ({"project_id": "p", "outcome": "REFUS", "reason": "HORS BUDGET"}, "followed_by"),
    ({"project_id": "p", "outcome": "REFUS", "reason": "HORS BUDGET", "followed_by": "1",
      "fields": "x"}, "fields: must be an object"),
])
def test_incomplete_dispositions_are_refused(body: dict[str, object], needle: str) -> None:
    with pytest.raises(DispositionError, match=needle):
        parse(body)


def test_effects_of_each_outcome() -> None:
    accord = effects(parse({"project_id": "p", "outcome": "ACCORD", "reason": "TRA",
                            "followed_by": "201"}), NOW)
    assert (accord["owner"], accord["team"], accord["status"]) == ("201", None, "open")
    assert (accord["fields"]["status_reason"], accord["fields"]["project_status"]) == (
        "EN COURS", "ACTIF")
    refus = effects(parse({"project_id": "p", "outcome": "REFUS", "reason": "HORS BUDGET",
                           "followed_by": "202"}), NOW)
    assert (refus["owner"], refus["status"], refus["fields"]["status_reason"],
            refus["fields"]["project_status"]) == ("202", "lost", "PERDU", "INACTIF")
    unusable = effects(parse({"project_id": "p", "outcome": "INEXPLOITABLE",
                              "reason": "DOUBLONS"}), NOW)
    assert "owner" not in unusable and "team" not in unusable
    assert (unusable["status"], unusable["fields"]["conclusion_code"],
            unusable["fields"]["status_reason"]) == ("lost", "DOUBLONS", "ANNULE")


def test_repeats_are_recognised_from_the_lead_history() -> None:
    done = parse({"project_id": "p", "outcome": "REFUS", "reason": "HORS BUDGET",
                  "followed_by": "1"})
    assert already_applied(["REFUS/HORS BUDGET"], done)
    assert not already_applied(["ACCORD/TRANSFERT ABOUTI"], done)
    assert not already_applied(None, done)
