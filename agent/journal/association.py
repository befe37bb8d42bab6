"""Which CRM records a call belongs to (§6 "Association"). Pure and deterministic.

Given everything the CRM knows about a caller (contacts matched by phone variants, plus
optional e-mail matches) and the call time:

* **primary contact**: linked to an account, else with a job title, else first by name
  (the display name, first name then last name, as people read it: accents and case set
  aside, "Élise" before "Fabien", then the exact spelling; unnamed contacts come after
  named ones, then the oldest id). Each criterion only breaks the ties of the previous
  one, as call-analysis tools do ("if nobody or several: ...").
* **account**: the primary contact's organization.
* **deal**: among the deals of that account (or of the primary contact when it has no
  account, and the contact's own deals in any case), in order: open at call time, else
  created up to 30 days after the call, else closed up to 30 days before, else closed after,
  else closed before. Ties: open deals first, then the creation date closest to the call,
  then the lowest id. A deal created more than 30 days after the call and still open fits
  no step and is not associated (the call predates it).
* **lead**: the most recent open lead of the primary contact, else of any matching contact.
* **owner** (the responsible manager): the open lead's owner, else the open deal's, else the
  primary contact's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from agent.core.model import CallerRecords, Contact, Deal, Lead, Organization
from agent.core.text import fold

WINDOW = timedelta(days=30)
T = TypeVar("T", Contact, Lead, Deal)
OwnerSource = Literal["lead", "deal", "contact"]
_LONG_AGO = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Association:
    """The records one call belongs to; every field may be None for an unknown caller."""

    contact: Contact | None = None
    contacts: tuple[Contact, ...] = ()
    account: Organization | None = None
    deal: Deal | None = None
    lead: Lead | None = None
    owner: str | None = None
    owner_source: OwnerSource | None = None

    @property
    def known(self) -> bool:
        return self.contact is not None


def responsible(assoc: Association | None) -> str | None:
    """Extension of the responsible manager: open lead's, else open deal's, else contact's."""
    return assoc.owner if assoc is not None else None


def associate(records: CallerRecords, at: datetime, *,
              email_matches: CallerRecords | None = None) -> Association:
    """The association of a call at time `at` (naive times are taken as UTC)."""
    merged = merge(records, email_matches) if email_matches is not None else records
    at = aware(at)
    contacts = tuple(sorted(merged.contacts, key=primary_order))
    if not contacts:
        return Association()
    primary = contacts[0]
    account = (merged.organizations.get(primary.organization_id)
               if primary.organization_id is not None else None)
    deal = pick_deal(_candidate_deals(merged.deals, primary), at)
    lead = open_lead(merged.leads, primary, contacts)
    owner, source = _owner(lead, deal, primary)
    return Association(contact=primary, contacts=contacts, account=account, deal=deal,
                       lead=lead, owner=owner, owner_source=source)


def merge(first: CallerRecords, second: CallerRecords) -> CallerRecords:
    """Phone matches and e-mail matches as one set of records (deduplicated by id)."""
    return CallerRecords(
        contacts=_unique([*first.contacts, *second.contacts]),
        organizations={**second.organizations, **first.organizations},
        leads=_unique([*first.leads, *second.leads]),
        deals=_unique([*first.deals, *second.deals]),
    )


def _unique(items: Iterable[T]) -> list[T]:
    seen: set[int] = set()
    out = []
    for item in items:
        if item.id is None or item.id not in seen:
            out.append(item)
        if item.id is not None:
            seen.add(item.id)
    return out


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- primary contact ----------------------------------------------------------------------

def primary_order(contact: Contact) -> tuple[bool, bool, bool, str, str, int]:
    """The sort key of the primary-contact rule (the module's text): lowest first."""
    name = contact.name.strip().casefold()
    return (contact.organization_id is None, not contact.job_title.strip(), not name,
            fold(name), name, contact.id if contact.id is not None else 2**63)


# -- deal cascade -------------------------------------------------------------------------

def _candidate_deals(deals: Iterable[Deal], primary: Contact) -> list[Deal]:
    account = primary.organization_id
    return [d for d in deals
            if (account is not None and d.organization_id == account)
            or d.contact_id == primary.id]


def _created(deal: Deal) -> datetime:
    return aware(deal.created_at) if deal.created_at is not None else _LONG_AGO


def _closed(deal: Deal) -> datetime | None:
    """When a closed deal closed; a closed deal without a date counts as closed long ago."""
    if deal.is_open:
        return None
    return aware(deal.closed_at) if deal.closed_at is not None else _LONG_AGO


def _steps(at: datetime) -> tuple[Callable[[Deal], bool], ...]:
    def open_at_call(d: Deal) -> bool:
        closed = _closed(d)
        return _created(d) <= at and (closed is None or closed > at)

    def created_soon_after(d: Deal) -> bool:
        return at < _created(d) <= at + WINDOW

    def closed_shortly_before(d: Deal) -> bool:
        closed = _closed(d)
        return closed is not None and at - WINDOW <= closed <= at

    def closed_after(d: Deal) -> bool:
        closed = _closed(d)
        return closed is not None and closed > at

    def closed_before(d: Deal) -> bool:
        closed = _closed(d)
        return closed is not None and closed <= at

    return (open_at_call, created_soon_after, closed_shortly_before, closed_after,
            closed_before)


def pick_deal(deals: Iterable[Deal], at: datetime) -> Deal | None:
    """The first cascade step with a match wins; ties as in the module docstring."""
    pool = list(deals)
    at = aware(at)
    for step in _steps(at):
        matches = [d for d in pool if step(d)]
        if matches:
            return min(matches, key=lambda d: (not d.is_open, abs(_created(d) - at),
                                               d.id if d.id is not None else 2**63))
    return None


# -- lead and owner -----------------------------------------------------------------------

def _recent(lead: Lead) -> tuple[datetime, int]:
    created = aware(lead.created_at) if lead.created_at is not None else _LONG_AGO
    return created, lead.id if lead.id is not None else -1


def open_lead(leads: Iterable[Lead], primary: Contact,
              contacts: Iterable[Contact]) -> Lead | None:
    """Most recent open lead of the primary contact, else of any matching contact."""
    pool = [lead for lead in leads if lead.status == "open"]
    own = [lead for lead in pool if lead.contact_id == primary.id]
    ids = {c.id for c in contacts}
    others = [lead for lead in pool if lead.contact_id in ids]
    return max(own or others, key=_recent, default=None)


def _owner(lead: Lead | None, deal: Deal | None,
           contact: Contact) -> tuple[str | None, OwnerSource | None]:
    if lead is not None and lead.owner:
        return lead.owner, "lead"
    if deal is not None and deal.is_open and deal.owner:
        return deal.owner, "deal"
    if contact.owner:
        return contact.owner, "contact"
    return None, None
