"""`crm-agent`: serve | check-rules | route | import (contacts|employees)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from agent import config as configuration
from agent.ops import logs
from agent.store.db import StoreError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm-agent", description=__doc__)
    parser.add_argument("-c", "--config", type=Path, default=None,
                        help="config file (default: $CRM_AGENT_CONFIG, else ./agent.yaml "
                             "when present, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the agent (HTTP, FastAGI, AMI)")
    check = sub.add_parser("check-rules", help="validate the rules files")
    check.add_argument("directory", nargs="?", type=Path)
    route = sub.add_parser("route", help="route one caller and print the decision and trace")
    route.add_argument("--caller", required=True)
    route.add_argument("--did")
    route.add_argument("--dtmf")
    route.add_argument("--location")
    route.add_argument("--at", help="ISO time (default: now)")
    imp = sub.add_parser("import", help="import a CSV file into the embedded store")
    imp.add_argument("kind", choices=["contacts", "employees"])
    imp.add_argument("file", type=Path)
    imp.add_argument("--no-progress", action="store_true")
    return parser


def config_path(arg: Path | None) -> Path | None:
    if arg is not None:
        return arg
    env = os.environ.get("CRM_AGENT_CONFIG")
    if env:
        return Path(env)
    default = Path("agent.yaml")
    return default if default.exists() else None


def run(coro: Coroutine[Any, Any, int], loop: str) -> int:
    """Run on uvloop when asked (or `auto` and installed: `pip install '.[fast]'`)."""
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise configuration.ConfigError("event_loop is uvloop but uvloop is not "
                                                "installed (pip install '.[fast]')") from None
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = configuration.load(config_path(args.config))
    except configuration.ConfigError as exc:
        print(f"crm-agent: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, config.log_format)
    from agent import commands

    handler = {"serve": commands.serve, "check-rules": commands.check_rules,
               "route": commands.route, "import": commands.import_file}[args.command]
    try:
        return run(handler(config, args), config.event_loop)
    except (configuration.ConfigError, StoreError) as exc:
        print(f"crm-agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
