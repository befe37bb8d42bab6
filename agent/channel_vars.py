"""The Asterisk channel variables a routing decision becomes (§3). Pure."""

from __future__ import annotations

from agent.routing import CallerView, RouteResult
from agent.rules import Decision


def destination_vars(decision: Decision) -> dict[str, str]:
    return {
        "CRM_ROUTE_TYPE": decision.destination.type,
        "CRM_ROUTE_TARGET": decision.destination.target,
        "CRM_VOICEMAIL": "1" if decision.voicemail else "0",
        "CRM_AUDIO": decision.audio or "",
        "CRM_RULE": decision.rule,
    }


def contact_vars(view: CallerView, *, callerid_name: bool = False) -> dict[str, str]:
    variables = {
        "CRM_KNOWN": "1" if view.known else "0",
        "CRM_CONTACT_ID": "" if view.contact_id is None else str(view.contact_id),
        "CRM_CONTACT_NAME": view.contact_name,
        "CRM_OWNER_EXTENSION": view.owner or "",
        "CRM_SCORE": str(view.score),
    }
    if callerid_name and view.contact_name:
        variables["CALLERID(name)"] = view.contact_name
    return variables


def route_vars(result: RouteResult, *, callerid_name: bool = False) -> dict[str, str]:
    variables = {**destination_vars(result.decision),
                 **contact_vars(result.view, callerid_name=callerid_name)}
    if result.error:
        variables["CRM_ERROR"] = result.error.split(" ")[0]
    return variables


def fallback_vars(default: Decision, reason: str) -> dict[str, str]:
    """What the PBX gets when routing itself failed (an unknown script, a timeout): the
    default destination only. Contact variables are left alone: an earlier `lookup` may
    have set them on the channel, and nothing new is known about the caller."""
    return {**destination_vars(default), "CRM_RULE": "default", "CRM_ERROR": reason}
