"""The CLI's commands (imported lazily by `cli.py`, which only parses arguments)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from agent.app import Agent
from agent.config import Config
from agent.core.rules import RulesError, load_rules, parse_file
from agent.crm.embedded import EmbeddedCrm
from agent.crm.importer import import_contacts, import_employees
from agent.journal import JournalError, load_settings
from agent.leads.intake import IntakeRules
from agent.leads.scoring import parse_scoring
from agent.leads.workflows import parse_workflows
from agent.routing.decisions import DecisionLog
from agent.routing.service import Breaker, CallerLookup, LookupCache, Router, RouteResult
from agent.store import open_store


async def serve(config: Config, _args: argparse.Namespace) -> int:
    await Agent(config).run()
    return 0


async def import_file(config: Config, args: argparse.Namespace) -> int:
    if not args.file.exists():
        print(f"crm-agent: {args.file}: no such file", file=sys.stderr)
        return 2
    store = await open_store(config.store_url, config.store.connect_timeout_s)
    try:
        if args.kind == "employees":
            report = await import_employees(store, args.file)
        else:
            with tqdm(desc="contacts", unit=" rows", disable=args.no_progress,
                      file=sys.stderr) as bar:
                report = await import_contacts(EmbeddedCrm(store.db), args.file, config.region,
                                               bar.update)
    finally:
        await store.close()
    for line, problem in report.errors[:50]:
        print(f"{args.file}:{line}: skipped: {problem}", file=sys.stderr)
    if len(report.errors) > 50:
        print(f"... and {len(report.errors) - 50} more bad rows", file=sys.stderr)
    print(f"{args.kind}: {report.created} created, {report.updated} updated, "
          f"{len(report.errors)} rejected")
    return 0 if not report.errors else 1


def rule_checks(config: Config) -> dict[str, Callable[[Path], object]]:
    """Validator of each rules file by name (each raises with file, line and entry)."""
    region, modules = config.region, tuple(config.crm.modules)
    return {
        "routing.yaml": lambda path: load_rules(path.parent, region=region, modules=modules),
        "journal.yaml": lambda path: load_settings(path, region=region),
        "intake.yaml": lambda path: parse_file(path.read_text(encoding="utf-8"), str(path),
                                               IntakeRules),
        "scoring.yaml": lambda path: parse_scoring(path.read_text(encoding="utf-8"), str(path)),
        "workflows.yaml": lambda path: parse_workflows(path.read_text(encoding="utf-8"),
                                                       str(path)),
    }


async def check_rules(config: Config, args: argparse.Namespace) -> int:
    """Validate every rules file of the directory (routing.yaml is required)."""
    directory = args.directory or config.path(config.rules.dir)
    failed = 0
    for name, check in rule_checks(config).items():
        path = directory / name
        if not path.exists() and name != "routing.yaml":
            continue
        try:
            check(path)
        except (RulesError, JournalError) as exc:
            print(f"crm-agent: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: OK")
    return 1 if failed else 0


async def route(config: Config, args: argparse.Namespace) -> int:
    """Route one caller against the configured store and rules; print decision and trace."""
    try:
        at = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    except ValueError:
        print(f"crm-agent: --at {args.at!r} is not an ISO time", file=sys.stderr)
        return 2
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        rules = load_rules(config.path(config.rules.dir), region=config.region,
                           modules=tuple(config.crm.modules))
    except RulesError as exc:
        print(f"crm-agent: {exc}", file=sys.stderr)
        return 1
    store = await open_store(config.store_url, config.store.connect_timeout_s)
    try:
        router = Router(CallerLookup(EmbeddedCrm(store.db), store), lambda: rules,
                        region=config.region, budget_s=5.0, cache=LookupCache(0, 0, 0, 0),
                        breaker=Breaker(1, 1, time.monotonic), decisions=DecisionLog(1))
        result = await router.dry_run(router.request(args.caller, did=args.did,
                                                     dtmf=args.dtmf, location=args.location,
                                                     via="cli", at=at))
    finally:
        await store.close()
    print(render(result))
    return 0


def render(result: RouteResult) -> str:
    decision, view = result.decision, result.view
    who = "anonymous" if result.anonymous else result.caller
    contact = f"{view.contact_name or '(no name)'} #{view.contact_id}" if view.known else "unknown"
    lines = [f"caller:      {who} ({contact}, owner {view.owner or '-'}, score {view.score})",
             f"destination: {decision.destination}",
             f"voicemail:   {'yes' if decision.voicemail else 'no'}",
             f"audio:       {decision.audio or '-'}",
             f"rule:        {decision.rule}"]
    if result.error:
        lines.append(f"error:       {result.error}")
    lines.append("trace:")
    lines += [f"  {'MATCH' if s.matched else 'skip '} {s.rule}: {s.reason}"
              for s in result.trace]
    if decision.rule == "default":
        lines.append("  -> no rule matched: default destination")
    return "\n".join(lines)
