"""§6 association: primary contact, account, deal cascade, open lead, responsible manager."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.core.model import CallerRecords, Contact, Deal, Lead, Organization
from agent.journal.association import Association, associate, pick_deal, responsible

CALL = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def contact(cid: int, first: str = "", last: str = "", *, org: int | None = None,
            title: str = "", owner: str | None = None) -> Contact:
    return Contact(id=cid, first_name=first, last_name=last, organization_id=org,
                   job_title=title, owner=owner, phones=["+33612345678"])


def deal(did: int, *, created: datetime | None, closed: datetime | None = None,
         is_open: bool | None = None, org: int | None = 1, contact_id: int | None = None,
         owner: str | None = None) -> Deal:
    open_ = closed is None if is_open is None else is_open
    return Deal(id=did, organization_id=org, contact_id=contact_id, created_at=created,
                closed_at=closed, is_open=open_, owner=owner)


def records(*contacts: Contact, deals: tuple[Deal, ...] = (), leads: tuple[Lead, ...] = (),
            orgs: tuple[Organization, ...] = (Organization(id=1, name="ACME"),)
            ) -> CallerRecords:
    return CallerRecords(contacts=list(contacts), organizations={o.id or 0: o for o in orgs},
                         leads=list(leads), deals=list(deals))


# -- primary contact ----------------------------------------------------------------------

@pytest.mark.parametrize(("contacts", "expected"), [
    pytest.param([contact(1, "Zoe"), contact(2, "Adam", title="CEO"), contact(3, "Yann", org=1)],
                 3, id="linked to an account wins over job title and name"),
    pytest.param([contact(1, "Zoe", org=1, title="CTO"), contact(2, "Yann", org=1)],
                 1, id="several with an account: the one with a job title"),
    pytest.param([contact(1, "Zoe", title="CTO"), contact(2, "Adam")],
                 1, id="no account: job title wins over name"),
    pytest.param([contact(1, "Zoe", org=1), contact(2, "adam", org=1)],
                 2, id="account and no title on both: first alphabetically, any case"),
    pytest.param([contact(1, "Bob", "Martin"), contact(2, "Bob", "Dupont")],
                 2, id="alphabetical on the full name"),
    pytest.param([contact(1, "Fabien", org=1), contact(2, "Élise", org=1)],
                 2, id="accents aside, as people read names: Élise before Fabien"),
    pytest.param([contact(1, "Eric", org=1), contact(2, "émile", org=1)],
                 2, id="Émile before Eric: the letters decide, not the accent"),
    pytest.param([contact(1, "Elise"), contact(2, "Élise")],
                 1, id="same letters: the exact spelling breaks the tie, then the id"),
    pytest.param([contact(1, "Zoé", "Martin"), contact(2, "Zoe", "Dupont")],
                 2, id="first name, then last name"),
    pytest.param([contact(1), contact(2, "Zoe")], 2, id="unnamed contacts come last"),
    pytest.param([contact(7, "Anne"), contact(4, "Anne")], 4, id="same name: oldest id"),
])
def test_primary_contact(contacts: list[Contact], expected: int) -> None:
    for order in (contacts, list(reversed(contacts))):
        assert associate(records(*order), CALL).contact.id == expected  # type: ignore[union-attr]


def test_unknown_caller_has_an_empty_association() -> None:
    assoc = associate(CallerRecords(), CALL)
    assert assoc == Association()
    assert not assoc.known and responsible(assoc) is None and responsible(None) is None


def test_account_is_the_primary_contacts_organization() -> None:
    orgs = (Organization(id=1, name="ACME"), Organization(id=2, name="Globex"))
    assoc = associate(records(contact(1, "Zoe", org=2, title="CEO"), contact(2, "Adam"),
                              orgs=orgs), CALL)
    assert assoc.account is not None and assoc.account.name == "Globex"


def test_email_matches_join_the_phone_matches() -> None:
    by_phone = records(contact(1, "Zoe"))
    by_email = CallerRecords(contacts=[contact(2, "Adam", org=1), contact(1, "Zoe")],
                             organizations={1: Organization(id=1, name="ACME")})
    assoc = associate(by_phone, CALL, email_matches=by_email)
    assert assoc.contact is not None and assoc.contact.id == 2
    assert [c.id for c in assoc.contacts] == [2, 1]
    assert assoc.account is not None and assoc.account.name == "ACME"


# -- deal cascade -------------------------------------------------------------------------

CASCADE = {
    "open_at_call": deal(1, created=CALL - 90 * DAY),
    "closed_after_call_but_open_then": deal(2, created=CALL - 90 * DAY, closed=CALL + 5 * DAY),
    "created_10d_after": deal(3, created=CALL + 10 * DAY),
    "closed_10d_before": deal(4, created=CALL - 60 * DAY, closed=CALL - 10 * DAY),
    "closed_after": deal(5, created=CALL + 40 * DAY, closed=CALL + 50 * DAY),
    "closed_long_before": deal(6, created=CALL - 400 * DAY, closed=CALL - 300 * DAY),
}


@pytest.mark.parametrize(("available", "expected"), [
    pytest.param(["open_at_call", "created_10d_after", "closed_10d_before"], 1,
                 id="1 open at call time"),
    pytest.param(["closed_after_call_but_open_then", "created_10d_after"], 2,
                 id="1 closed since, but open at call time"),
    pytest.param(["created_10d_after", "closed_10d_before", "closed_after"], 3,
                 id="2 created up to 30 days after"),
    pytest.param(["closed_10d_before", "closed_after", "closed_long_before"], 4,
                 id="3 closed up to 30 days before"),
    pytest.param(["closed_after", "closed_long_before"], 5, id="4 closed after the call"),
    pytest.param(["closed_long_before"], 6, id="5 closed before the call"),
])
def test_deal_cascade(available: list[str], expected: int) -> None:
    deals = tuple(CASCADE[name] for name in available)
    assoc = associate(records(contact(1, "Zoe", org=1), deals=deals), CALL)
    assert assoc.deal is not None and assoc.deal.id == expected


def test_a_deal_created_long_after_the_call_and_still_open_is_not_associated() -> None:
    assert pick_deal([deal(1, created=CALL + 45 * DAY)], CALL) is None


def test_deal_ties_go_to_the_creation_date_closest_to_the_call() -> None:
    deals = [deal(1, created=CALL - 100 * DAY), deal(2, created=CALL - 3 * DAY),
             deal(3, created=CALL - 20 * DAY)]
    assert pick_deal(deals, CALL).id == 2  # type: ignore[union-attr]
    later = [deal(4, created=CALL + 20 * DAY), deal(5, created=CALL + 2 * DAY)]
    assert pick_deal(later, CALL).id == 5  # type: ignore[union-attr]


def test_deal_ties_prefer_open_deals() -> None:
    # both created 5 days after the call; the one still open wins although it is newer
    closed = deal(1, created=CALL + 5 * DAY, closed=CALL + 6 * DAY)
    still_open = deal(2, created=CALL + 5 * DAY + timedelta(hours=1))
    assert pick_deal([closed, still_open], CALL).id == 2  # type: ignore[union-attr]


def test_closed_deal_without_close_date_counts_as_closed_long_ago() -> None:
    undated = deal(1, created=CALL - 200 * DAY, is_open=False)
    recent = deal(2, created=CALL - 50 * DAY, closed=CALL - 20 * DAY)
    assert pick_deal([undated, recent], CALL).id == 2  # type: ignore[union-attr]
    assert pick_deal([undated], CALL).id == 1  # type: ignore[union-attr]


def test_deals_belong_to_the_account_or_to_the_primary_contact() -> None:
    other_account = deal(1, created=CALL - DAY, org=9)
    own = deal(2, created=CALL - 300 * DAY, closed=CALL - 200 * DAY, org=None, contact_id=1)
    assoc = associate(records(contact(1, "Zoe"), deals=(other_account, own)), CALL)
    assert assoc.deal is not None and assoc.deal.id == 2


def test_naive_times_are_utc() -> None:
    naive = CALL.replace(tzinfo=None)
    assert pick_deal([deal(1, created=naive - DAY)], naive) is not None


# -- open lead and responsible manager ----------------------------------------------------

def lead(lid: int, contact_id: int, *, status: str = "open", owner: str | None = None,
         created: datetime | None = None) -> Lead:
    return Lead(id=lid, contact_id=contact_id, status=status,  # type: ignore[arg-type]
                owner=owner, created_at=created or CALL - lid * DAY)


def test_open_lead_is_the_primary_contacts_most_recent() -> None:
    leads = (lead(1, 1, created=CALL - 5 * DAY), lead(2, 1, created=CALL - DAY),
             lead(3, 1, status="converted", created=CALL), lead(4, 2, created=CALL))
    assoc = associate(records(contact(1, "Zoe", org=1), contact(2, "Adam"), leads=leads), CALL)
    assert assoc.lead is not None and assoc.lead.id == 2


def test_open_lead_of_another_matching_contact_when_the_primary_has_none() -> None:
    leads = (lead(1, 1, status="lost"), lead(2, 2))
    assoc = associate(records(contact(1, "Zoe", org=1), contact(2, "Adam"), leads=leads), CALL)
    assert assoc.lead is not None and assoc.lead.id == 2


@pytest.mark.parametrize(("leads", "deals", "contact_owner", "expected"), [
    pytest.param((lead(1, 1, owner="201"),), (deal(1, created=CALL - DAY, owner="202"),),
                 "203", ("201", "lead"), id="open lead owner first"),
    pytest.param((lead(1, 1, owner=None),), (deal(1, created=CALL - DAY, owner="202"),),
                 "203", ("202", "deal"), id="lead without owner: open deal owner"),
    pytest.param((lead(1, 1, status="converted", owner="201"),),
                 (deal(1, created=CALL - DAY, owner="202"),), "203", ("202", "deal"),
                 id="no open lead: open deal owner"),
    pytest.param((), (deal(1, created=CALL - 90 * DAY, closed=CALL - DAY, owner="202"),),
                 "203", ("203", "contact"), id="closed deal: contact owner"),
    pytest.param((), (), None, (None, None), id="nobody responsible"),
])
def test_responsible_manager(leads: tuple[Lead, ...], deals: tuple[Deal, ...],
                             contact_owner: str | None,
                             expected: tuple[str | None, str | None]) -> None:
    assoc = associate(records(contact(1, "Zoe", org=1, owner=contact_owner), leads=leads,
                              deals=deals), CALL)
    assert (responsible(assoc), assoc.owner_source) == expected


def test_association_is_deterministic_whatever_the_input_order() -> None:
    contacts = [contact(i, name, org=1 if i % 2 else None) for i, name in
                enumerate(["Eve", "Dan", "Cat", "Bea", "Al"], start=1)]
    deals = [deal(i, created=CALL - i * DAY) for i in range(1, 6)]
    leads = [lead(i, i) for i in range(1, 6)]
    first = associate(CallerRecords(contacts=contacts, deals=deals, leads=leads), CALL)
    again = associate(CallerRecords(contacts=contacts[::-1], deals=deals[::-1],
                                    leads=leads[::-1]), CALL)
    assert first == again
    assert first.contact is not None and first.contact.first_name == "Al"  # with an account
