"""The CLI's commands (imported lazily by `cli.py`, which only parses arguments)."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from agent.app import Agent
from agent.config import Config
from agent.importer import import_contacts, import_employees
from agent.store import open_store


async def serve(config: Config, _args: argparse.Namespace) -> int:
    await Agent(config).run()
    return 0


async def import_file(config: Config, args: argparse.Namespace) -> int:
    if not args.file.exists():
        print(f"crm-agent: {args.file}: no such file", file=sys.stderr)
        return 2
    store = await open_store(config.store_url)
    try:
        if args.kind == "employees":
            report = await import_employees(store, args.file)
        else:
            with tqdm(desc="contacts", unit=" rows", disable=args.no_progress,
                      file=sys.stderr) as bar:
                report = await import_contacts(store, args.file, config.region, bar.update)
    finally:
        await store.close()
    for line, problem in report.errors[:50]:
        print(f"{args.file}:{line}: skipped: {problem}", file=sys.stderr)
    if len(report.errors) > 50:
        print(f"... and {len(report.errors) - 50} more bad rows", file=sys.stderr)
    print(f"{args.kind}: {report.created} created, {report.updated} updated, "
          f"{len(report.errors)} rejected")
    return 0 if not report.errors else 1


async def check_rules(config: Config, args: argparse.Namespace) -> int:
    from agent.rules import RulesError, load_rules

    directory = args.directory or config.path(config.routing.rules_dir)
    try:
        rules = load_rules(directory, region=config.region, modules=config.crm.modules)
    except RulesError as exc:
        print(f"crm-agent: {exc}", file=sys.stderr)
        return 1
    print(f"{directory}: OK ({len(rules.files)} file(s))")
    return 0


async def route(config: Config, args: argparse.Namespace) -> int:
    print("route: not available yet", file=sys.stderr)
    return 2
