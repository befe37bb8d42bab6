"""The FastAGI scripts of routing: `route`, `dtmf` and `lookup`, an AGI request in, the
Asterisk channel variables of the answer out (`AGI(agi://agent:4573/route,${EXTEN})`)."""

from __future__ import annotations

from collections.abc import Awaitable

from agent.core.rules import Decision
from agent.ops.metrics import Metrics
from agent.pbx.agi import AgiRequest, Script
from agent.routing.service import CallerView, Looked, Router, RouteResult

Answer = dict[str, str] | Awaitable[dict[str, str]]


def did_of(request: AgiRequest) -> str | None:
    """The DID: the `route` script's first argument, else `agi_dnid` unless `unknown`."""
    if request.script == "route" and request.args and request.args[0]:
        return request.args[0]
    return request.dnid if request.dnid not in ("", "unknown") else None


class AgiScripts:
    """Each script answers at once when the caller is cached or anonymous (FastAGI's fast
    path: no task), else with a coroutine that asks the CRM; the server keeps the deadline."""

    def __init__(self, router: Router, metrics: Metrics, *, callerid_name: bool) -> None:
        self.router, self.metrics, self.callerid_name = router, metrics, callerid_name

    def scripts(self) -> dict[str, Script]:
        return {"route": self.route, "dtmf": self.dtmf, "lookup": self.lookup}

    def route(self, request: AgiRequest) -> Answer:
        return self._route(request, None, None)

    def dtmf(self, request: AgiRequest) -> Answer:
        """`dtmf,DIGITS[,LOCATION]`: the caller's choice in an IVR menu, routed again."""
        args = request.args
        return self._route(request, args[0] if args else None, args[1] if len(args) > 1 else None)

    def lookup(self, request: AgiRequest) -> Answer:
        """Who is calling (CRM_* variables), without routing: for a dialplan that decides."""
        known = self.router.look_up(self.router.request(request.callerid).caller)
        return self._contact(known) if isinstance(known, tuple) else self._contact_later(known)

    def _route(self, request: AgiRequest, dtmf: str | None, location: str | None) -> Answer:
        call = self.router.request(request.callerid, did=did_of(request), dtmf=dtmf,
                                   location=location, via="agi")
        result = self.router.route(call)
        return self._answer(result) if isinstance(result, RouteResult) else self._later(result)

    async def _later(self, result: Awaitable[RouteResult]) -> dict[str, str]:
        return self._answer(await result)

    def _answer(self, result: RouteResult) -> dict[str, str]:
        self.metrics.routed(result.decision.rule, "agi", result.took_ms / 1000)
        return route_vars(result, callerid_name=self.callerid_name)

    async def _contact_later(self, known: Awaitable[Looked]) -> dict[str, str]:
        return self._contact(await known)

    def _contact(self, known: Looked) -> dict[str, str]:
        view, error = known
        variables = contact_vars(view, callerid_name=self.callerid_name)
        if error:
            variables["CRM_ERROR"] = error.split(" ")[0]
        return variables


# -- the channel variables a decision becomes ----------------------------------------------

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
