"""Store benchmark: import N generated contacts from CSV, then look callers up.

    python bench/store_bench.py [--contacts 1000000] [--lookups 50000] [--concurrency 32]
                                [--url sqlite:///var/bench/store.db]

Import goes through the real CSV importer (`crm-agent import contacts`), so phone parsing
and normalisation are included. Lookups take random existing callers written in a random
variant (+33…, 0033…, 06…, with spaces), normalise them and call `EmbeddedCrm.find_caller` (the
routing lookup: contact, account, leads and deals in one round trip to the engine).
Two lookups are measured: the contact by phone (`find_contacts`, one indexed query) and the
whole caller (`find_caller`: contact, account, leads, deals in one query, what routing uses
on a cache miss). "Cold" is the first pass on a freshly opened store with empty number
caches; "warm" repeats the same numbers (SQLite pages and parsed numbers cached).
Targets (issue #2): import ≤ 60 s, ≥ 20,000 lookups/s, RSS ≤ 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import resource
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from agent.core import phones
from agent.crm.embedded import EmbeddedCrm
from agent.crm.importer import import_contacts
from agent.store import open_store

FIRST = ["Jean", "Marie", "Paul", "Sophie", "Luc", "Claire", "Hugo", "Emma", "Louis", "Alice"]
LAST = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand"]


def number(i: int) -> str:
    return f"+336{10_000_000 + i * 7:08d}"


def variants(e164: str) -> tuple[str, ...]:
    """Forms a CRM may hold for a French `+33…` number: E.164, 00…, national, digits, NSN."""
    nsn = e164[3:]
    return e164, "00" + e164[1:], "0" + nsn, e164[1:], nsn


def write_csv(path: Path, count: int, rng: random.Random) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["external_id", "first_name", "last_name", "company", "phone", "email",
                      "segment"])
        for i in range(count):
            e164 = number(i)
            form = rng.choice(variants(e164)[:3])
            out.writerow([i, rng.choice(FIRST), rng.choice(LAST), f"Org {i % 10_000}", form,
                          f"c{i}@example.com" if i % 3 == 0 else "", rng.choice("ABC")])


def spaced(national: str) -> str:
    return " ".join(national[i:i + 2] for i in range(0, len(national), 2))


async def lookups(url: str, numbers: list[str], concurrency: int, full: bool
                  ) -> tuple[float, float]:
    """(cold, warm) lookups/s: a fresh store and empty number caches, then the same again."""
    rates = []
    phones.normalize.cache_clear()
    store = await open_store(url)
    crm = EmbeddedCrm(store.db)
    try:
        for _round in ("cold", "warm"):
            async def worker(queue: Iterator[str]) -> None:
                for raw in queue:
                    e164 = phones.normalize(raw, "FR")
                    assert e164 is not None
                    if full:
                        assert (await crm.find_caller(e164)).known, raw
                    else:
                        assert await crm.find_contacts(phone=e164), raw

            started = time.perf_counter()
            shared = iter(numbers)
            await asyncio.gather(*(worker(shared) for _ in range(concurrency)))
            rates.append(len(numbers) / (time.perf_counter() - started))
    finally:
        await store.close()
    return rates[0], rates[1]


def rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def prepare(args: argparse.Namespace, rng: random.Random) -> tuple[str, Path]:
    workdir = Path(args.workdir)
    if args.skip_import:
        return args.url or f"sqlite:///{workdir / 'store.db'}", workdir / "contacts.csv"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    csv_path = workdir / "contacts.csv"
    write_csv(csv_path, args.contacts, rng)
    return args.url or f"sqlite:///{workdir / 'store.db'}", csv_path


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(42)
    url, csv_path = prepare(args, rng)
    if args.skip_import:
        return await measure(args, rng, url)
    store = await open_store(url)
    crm = EmbeddedCrm(store.db)
    started = time.perf_counter()
    report = await import_contacts(crm, csv_path, "FR")
    import_s = time.perf_counter() - started
    await store.close()
    print(f"import: {report.created:,} contacts in {import_s:.1f} s "
          f"({report.created / import_s:,.0f} rows/s), {len(report.errors)} rejected")
    await measure(args, rng, url)


async def measure(args: argparse.Namespace, rng: random.Random, url: str) -> None:
    picks = [number(rng.randrange(args.contacts)) for _ in range(args.lookups)]
    forms = [rng.choice([*variants(n)[:4], spaced(variants(n)[2])])
             for n in picks]
    for label, full in (("contact (find_contacts)", False), ("caller (find_caller)", True)):
        cold, warm = await lookups(url, forms, args.concurrency, full)
        print(f"{label} by random variant, {args.concurrency} concurrent: "
              f"cold {cold:,.0f}/s, warm {warm:,.0f}/s")
    print(f"peak RSS: agent process {rss_mb():.0f} MB, largest import worker "
          f"{rss_mb(resource.RUSAGE_CHILDREN):.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workdir", default="var/bench")
    parser.add_argument("--url", default=None)
    parser.add_argument("--skip-import", action="store_true",
                        help="measure lookups on the store a previous run imported")
    asyncio.run(main(parser.parse_args()))
