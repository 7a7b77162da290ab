import pytest

from origin.sanitize import scrub_text


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Delivered, signed for by J SMITH", "SMITH"),
        ("Signed by: Anna-Lena Müller", "Müller"),
        ("Package received by peter o'neil at door", "neil"),
        ("Left with Mr Jones next door", "Jones"),
        ("Zugestellt an Hans Meier", "Meier"),
        ("Colis remis à Jean Dupont", "Dupont"),
        ("Contact jane.doe@example.com for details", "jane.doe"),
        ("Driver called +44 20 7946 0958", "7946"),
    ],
)
def test_personal_data_in_carrier_text_is_masked(text: str, gone: str) -> None:
    out = scrub_text(text)
    assert gone not in out
    assert "***" in out


@pytest.mark.parametrize(
    "text",
    ["Delivered to front door", "Left with neighbour", "Picked up by carrier", "Arrived at sorting facility"],
)
def test_places_and_roles_are_kept(text: str) -> None:
    assert scrub_text(text) == text


# -- street addresses and postcodes (issue #17) -----------------------------------------

import re  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from models.world import World, WorldSpec  # noqa: E402
from origin.sanitize import MASK, Known, scrub_location  # noqa: E402
from tests.origin.test_aggregators import AFTERSHIP_CHECKPOINTS, EASYPOST_SCANS  # noqa: E402

GENERIC = [
    # (text, what must go) — British, German, French, US and Dutch formats
    ("Delivered to 77 Wunderlich Street", "Wunderlich"),
    ("Left at 12 Baker St.", "Baker"),
    ("Delivered to J SMITH, 77 WUNDERLICH STREET, ZQ9 8XW", "WUNDERLICH"),
    ("Posted to Flat 2, 9 Kings Road", "Kings"),
    ("Apt 4B, 1600 Pennsylvania Ave NW", "Pennsylvania"),
    ("Apt 4B", "4B"),
    ("Zugestellt: Hauptstraße 5", "Hauptstraße"),
    ("Zustellung an Musterstr. 12a", "Musterstr"),
    ("Abgegeben Am Markt 3", "Markt"),
    ("Schillerstrasse 12-14, Hinterhaus", "Schillerstrasse"),
    ("Livré au 12 rue de Rivoli", "Rivoli"),
    ("Livré 5 avenue des Champs-Élysées", "Champs"),
    ("Déposé 3 bis place de la Mairie", "Mairie"),
    ("Postcode SW1A 1AA", "SW1A"),
    ("Postcode M1 1AE", "1AE"),
    ("Postcode zq98xw", "zq98xw"),
    ("PLZ 10115 Berlin", "10115"),
    ("PLZ D-10115", "10115"),
    ("CP 75008 Paris", "75008"),
    ("ZIP 94103", "94103"),
    ("ZIP 94103-1234", "94103"),
    ("Postcode 1234 AB Amsterdam", "1234 AB"),
]


@pytest.mark.parametrize(("text", "gone"), GENERIC)
def test_street_addresses_and_postcodes_in_carrier_text_are_masked(text: str, gone: str) -> None:
    out = scrub_text(text)
    assert gone not in out and MASK in out, out
    assert gone not in scrub_location(text), scrub_location(text)


KEPT = [
    "Munich MFC 4",
    "Hamburg Warehouse 3",
    "Hamburg Hub",
    "Arrived at sorting facility",
    "Out for delivery",
    "Delivered, In/At Mailbox",
    "Arrived at USPS Regional Origin Facility",
    "WEST PALM BEACH FL DISTRIBUTION CENTER",
    "HOUSTON, TX",
    "Scanned 2031-01-12 at 10:30 UTC",
    "Parcel 1 of 2 left in safe place",
    "Weight 12500 kg, 2.5 kg, 12,500 g",
    "Gate B2 1st floor, bay 4",
    "Departed facility 1430 UTC",
    "Tracking 1ZWP000000104729, ref JD0146000000104729",
    "Sorting unit 5, dock 12",
    "Customs clearing 2 of 3",
]


@pytest.mark.parametrize("text", KEPT)
def test_carrier_vocabulary_without_addresses_is_kept(text: str) -> None:
    assert scrub_text(text) == text
    assert scrub_location(text) == text


def test_only_city_region_and_country_survive_in_locations() -> None:
    assert scrub_location("77 Wunderlich Street, London ZQ9 8XW, GB") == "London, GB"
    assert scrub_location("HOLLY RIDGE, NC 28445") == "HOLLY RIDGE, NC"
    assert scrub_location("D-10115 Berlin, DE") == "Berlin, DE"
    assert scrub_location("5 avenue des Champs-Élysées, 75008 Paris, France") == "Paris, France"
    assert scrub_location("1600 Pennsylvania Ave NW, Washington, DC 20500") == "Washington, DC"
    assert scrub_location("Flat 2, 9 Kings Road") == ""
    assert scrub_location("Left with J SMITH, Hamburg") == "Hamburg"


GB = Known.of(["3 The Paddocks"], ["ZQ9 8XW"])
DE = Known.of(["Zwiebelgrund 9b"], ["20457"])


@pytest.mark.parametrize(
    ("known", "text", "gone", "generic_too"),
    [
        # The order's own street carries no street word the generic patterns know.
        (GB, "Left at 3 The Paddocks", "Paddocks", False),
        (GB, "Left at 3 THE  PADDOCKS", "PADDOCKS", False),
        (GB, "left at the paddocks, 3", "paddocks", False),
        (GB, "Card left, ZQ9  8XW", "8XW", True),
        (GB, "Card left, zq98xw", "zq98xw", True),
        (DE, "Zugestellt Zwiebelgrund 9b", "Zwiebelgrund", False),
        (DE, "Zugestellt ZWIEBELGRUND 9 B", "ZWIEBELGRUND", False),
        (DE, "Zustellbezirk 2 04 57", "04 57", False),
    ],
)
def test_the_orders_own_address_is_masked_however_it_is_written(
    known: Known | None, text: str, gone: str, generic_too: bool
) -> None:
    assert known is not None
    assert gone not in scrub_text(text, known)
    assert gone not in scrub_location(text, known)
    assert (gone not in scrub_text(text)) == generic_too


def test_an_orders_street_spelled_the_carriers_way_is_masked() -> None:
    known = Known.of(["Hauptstraße 5", "77 Wunderlich Street"], ["ZQ9 8XW"])
    assert known is not None
    for text in ["Hauptstrasse 5", "HAUPTSTR. 5", "Wunderlich St", "77 wunderlich st."]:
        out = scrub_text(text, known)
        assert "haupt" not in out.lower() and "wunderlich" not in out.lower(), out
    assert scrub_location("Wunderlich St, London ZQ98XW, GB", known) == "London, GB"


def test_an_orders_house_number_alone_is_not_masked() -> None:
    assert scrub_text("Munich MFC 3", GB) == "Munich MFC 3"


def seeded_worlds() -> list[World]:
    now = datetime(2031, 6, 1, tzinfo=UTC)
    return [
        World(
            WorldSpec(seed=seed, regions=8, sites_per_region=6, shipments=3000, customers_per_region=200), now
        )
        for seed in (7, 11)
    ]


def test_no_seeded_world_text_changes_under_the_sanitizer() -> None:
    """Every message and location a seeded world makes, with and without its order's address."""
    scans = [*EASYPOST_SCANS, *AFTERSHIP_CHECKPOINTS]
    messages: set[str] = {s.message for s in scans if s.message}
    places: set[str] = {", ".join(p for p in (s.city, s.state, s.country) if p) for s in scans}
    changed: list[str] = []

    def expected(text: str) -> str:  # the signer's name is all that may go
        return re.sub(r"signed for by .*$", "signed for by ***", text)

    for world in seeded_worlds():
        places |= {site.name for site in world.sites}
        for s, o in zip(world.shipments(), world.orders(), strict=False):
            known = Known.of([o.customer.street], [o.customer.postcode, o.destination.postcode])
            for e in s.events:
                messages.add(e.message)
                places.add(e.location)
                if (
                    scrub_text(e.message, known) != expected(e.message)
                    or scrub_location(e.location, known) != e.location
                ):
                    changed.append(
                        f"{e.message!r} @ {e.location!r} for {o.customer.street}, {o.customer.postcode}"
                    )
    changed += [t for t in messages if scrub_text(t) != expected(t)]
    changed += [t for t in places if scrub_location(t) != t or scrub_text(t) != t]
    assert not changed, changed[:20]
    assert {"Hamburg Hub", "Munich MFC 4", "Manchester Warehouse 6", "HOUSTON, TX"} <= places
    assert "Arrived at sorting facility" in messages


def test_the_seeded_worlds_own_addresses_are_caught_by_the_generic_patterns() -> None:
    """Customers of the simulated world, written into carrier text, never survive it."""
    for world in seeded_worlds()[:1]:
        for o in list(world.orders())[:400]:
            c = o.customer
            text = f"Delivered to {c.street}, {c.postcode} {c.city}"
            street_name = c.street.strip("0123456789 ")
            assert street_name not in scrub_text(text), text
            assert c.postcode not in scrub_text(text), text
            assert scrub_location(f"{c.street}, {c.postcode} {c.city}") == c.city


@given(st.text(max_size=80))
def test_scrubbing_twice_changes_nothing_more(text: str) -> None:
    once = scrub_text(text, GB)
    assert scrub_text(once, GB) == once
    place = scrub_location(text, GB)
    assert scrub_location(place, GB) == place
