"""The one sanitizer every ingestion path uses before anything is stored.

Carrier payloads are decoded into whitelisted structs (unknown fields are dropped by the
decoder); the free text that remains is scrubbed here, in two passes:

1. **The order's own address** (`Known`), when the shipment's order is known: its street name
   (with the house number beside it, before or after) and its full postcode, matched ignoring
   case and whitespace ("ZQ9 8XW", "zq98xw", "Hauptstrasse 5" for "Hauptstraße 5", "Baker St"
   for "Baker Street"). The order's house number alone is left: "4" also names hubs and bays.
2. **Generic patterns**, for every event: names after "signed for by", "received by" and the
   like, e-mail addresses, phone numbers, postcodes of the countries waypost ships to (UK
   "SW1A 1AA", German and French five digits with an optional "D-"/"F-", US ZIP and ZIP+4,
   Dutch "1234 AB") and street addresses ("77 Wunderlich Street", "12 Baker St", "Hauptstraße
   5", "Musterstr. 12a", "Am Markt 3", "12 rue de Rivoli", "Apt 4B", "Flat 2").

**Messages** keep their shape: what matched becomes `***` ("Delivered to ***, ***, ***").

**Locations** keep only city, region and country. The rule: split the location on commas; in
each part, remove postcodes (and a country prefix such as "D-"); drop a part that then holds a
street address, or a name, e-mail or phone number; join what is left with ", ". So "77 Wunderlich
Street, London ZQ9 8XW, GB" becomes "London, GB" and "HOLLY RIDGE, NC 28445" "HOLLY RIDGE, NC". A
location none of that touches is returned unchanged, byte for byte.

The generic pass depends on the text alone and is cached (carrier texts repeat a lot); the known
pass runs first, only when a cheap substring test says the order's address may be there. What
the generic patterns leave alone is fixed by a test that runs the sanitizer over every message
and location a seeded world generates ("Munich MFC 4", "Hamburg Hub", "Arrived at sorting
facility" …): none may change. Bump `SCRUB_VERSION` whenever a change here would scrub text
stored before it; the origin then re-scrubs what it holds (`origin.rescrub`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache

MASK = "***"
SCRUB_VERSION = 1  # 1: street addresses and postcodes

# Words that follow "delivered to", "left with" … and are places or roles, not people.
_NOT_NAMES = frozenset(
    [
        "a",
        "an",
        "the",
        "front",
        "back",
        "side",
        "door",
        "porch",
        "neighbour",
        "neighbor",
        "neighbours",
        "neighbors",
        "reception",
        "mailroom",
        "mail",
        "room",
        "concierge",
        "parcel",
        "package",
        "locker",
        "box",
        "safe",
        "place",
        "garage",
        "garden",
        "shed",
        "building",
        "office",
        "recipient",
        "customer",
        "resident",
        "security",
        "desk",
        "doorman",
        "letterbox",
        "mailbox",
        "pickup",
        "point",
        "shop",
        "store",
        "counter",
        "post",
        "depot",
        "hub",
        "household",
        "nobody",
        "carrier",
        "courier",
        "driver",
    ]
)
_NAME_WORD = r"[A-Za-zÀ-ÖØ-öø-ÿ][A-Za-zÀ-ÖØ-öø-ÿ'’.-]*"
_SIGNER = re.compile(
    r"(?P<lead>\b(?:signed\s+for\s+by|signed\s+by|received\s+by|accepted\s+by|collected\s+by|"
    r"picked\s+up\s+by|handed\s+(?:over\s+)?to|delivered\s+to|left\s+with|"
    r"unterschrieben\s+von|empfangen\s+von|zugestellt\s+an|remis\s+à|signé\s+par|reçu\s+par)"
    r"\s*:?\s+)"
    rf"(?P<name>{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w])\+?\d[\d\s().-]{6,}\d(?![\w:])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")  # what the phone pattern also fits

# -- postcodes ---------------------------------------------------------------------------
# A number glued to a unit, a price or another number is a quantity, not a postcode.
_UNITS = r"(?i:kg|g|lbs?|oz|km|mi|m|cm|mm|h|hrs?|min|eur|usd|gbp|pcs)\b|%"
_POSTCODE = re.compile(
    "|".join(
        [
            # UK: outward code, then digit and two letters of the inward alphabet (no C I K M O V);
            # "B2 1st" is an ordinal, not a postcode (but "M20 1RD" is one).
            r"(?<![\w])(?i:[A-Z]{1,2}\d[A-Z\d]?\s*\d(?!(?-i:st|nd|rd|th)\b)[ABD-HJLNP-UW-Z]{2})(?![\w])",
            # DE, FR, US: five digits (a "D-"/"F-" prefix, a ZIP+4 suffix), standing alone.
            r"(?<![\w.,:/#$€£])(?<!\d-)(?:(?i:D|DE|F|FR|US)-\s?)?\d{5}(?:-\d{4})?"
            rf"(?![\w]|[.,:/]\d|\s?(?:{_UNITS}))",
            # NL: four digits and two capitals ("1234 AB"); never SA, SD, SS, nor a time or unit.
            r"(?<![\w.,:/#$€£])[1-9]\d{3}\s?(?!SA|SD|SS|AM|PM|KG|LB|OZ|KM|MI|CM|MM)[A-Z]{2}(?![\w])",
        ]
    )
)

# -- street addresses --------------------------------------------------------------------
_HOUSE = r"(?<![\w.,:/#-])\d{1,5}[A-Za-z]?(?:\s*[-/]\s*\d{1,5}[A-Za-z]?)?(?![\w:])"
_CAP_WORD = r"[A-ZÀ-ÖØ-Þ][\wÀ-ÖØ-öø-ÿ'’.-]*"  # a capitalised word: street names are capitalised
_EN_TYPES = (
    r"(?i:street|road|avenue|lane|drive|close|way|court|place|crescent|terrace|boulevard|square|"
    r"gardens|grove|mews|row|walk|parkway|highway|circle)"
)
_EN_ABBREV = r"(?:St|ST|Rd|RD|Ave|AVE|Av|Ln|LN|Dr|DR|Blvd|BLVD|Ct|CT|Pl|PL|Sq|SQ|Hwy|HWY|Pkwy|Cres|Terr)\.?"
_FR_TYPES = r"(?i:rue|avenue|av\.|boulevard|bd|place|chemin|allée|allee|impasse|quai|cours|route|passage)"
_FR_WORD = r"(?:(?:de|du|des|la|le|les|aux?|sur|en)(?![\w'’])|[dl]['’][^\W\d_][\w-]*|[A-ZÀ-ÖØ-Þ][\w'’-]*)"
_DE_SUFFIX = r"(?i:straße|strasse|str\.|weg|gasse|platz|allee|damm|ufer|chaussee|pfad|steig|stieg)"
_DE_PREP = r"(?:Am|An der|An den|Auf dem|Auf der|Im|In der|In den|Zum|Zur|Unter den|Hinter der|Vor dem)"
_DE_NUMBER = r"\d{1,3}\s?[a-zA-Z]?(?:\s*[-/]\s*\d{1,3}[a-zA-Z]?)?(?![\w])"
_ADDRESS = re.compile(
    "|".join(
        [
            # EN: "77 Wunderlich Street", "12 Baker St", "1600 Pennsylvania Ave NW"
            rf"{_HOUSE},?\s+(?:{_CAP_WORD}\s+){{1,4}}(?:{_EN_TYPES}(?![\w])|{_EN_ABBREV}(?![\w]))"
            r"(?:\s+(?:NW|NE|SW|SE|N|S|E|W)(?![\w]))?",
            # FR: "12 rue de Rivoli", "5 avenue des Champs-Élysées", "3 bis place de la Mairie"
            rf"{_HOUSE}(?:\s*(?i:bis|ter)(?![\w]))?,?\s+{_FR_TYPES}(?![\w])(?:\s+{_FR_WORD}){{1,5}}",
            # DE: "Hauptstraße 5", "Musterstr. 12a", "Lindenweg 3-5"
            rf"(?<![\w])[A-ZÄÖÜ][\wäöüß-]*{_DE_SUFFIX}\s*{_DE_NUMBER}",
            # DE: "Am Markt 3", "An der Alster 12"
            rf"(?<![\w]){_DE_PREP}\s+[A-ZÄÖÜ][\wäöüß-]+\s+{_DE_NUMBER}",
            # A flat within a building: "Apt 4B", "Flat 2", "Wohnung 3"
            r"(?<![\w])(?i:flat|apt\.?|apartment|appartement|suite|wohnung|whg\.)\s*#?\s*\d{1,4}[A-Za-z]?(?![\w])",
        ]
    )
)


def _mask_signer(m: re.Match[str]) -> str:
    first = m.group("name").split()[0].lower().strip(".")
    if first in _NOT_NAMES:
        return m.group(0)
    return m.group("lead") + MASK


def _mask_phone(m: re.Match[str]) -> str:
    return m.group(0) if _DATE.fullmatch(m.group(0)) else MASK


def _mask_people(text: str) -> str:
    """Names, e-mails and phone numbers."""
    text = _EMAIL.sub(MASK, text)
    text = _PHONE.sub(_mask_phone, text)
    return _SIGNER.sub(_mask_signer, text)


# -- the order's own address -------------------------------------------------------------
_STREET_TYPES: dict[str, str] = {  # a street word, and how carriers shorten it
    "street": r"st(?:reet)?",
    "road": r"r(?:oa)?d",
    "avenue": r"av(?:e(?:nue)?)?",
    "lane": r"la?ne?",
    "drive": r"dr(?:ive)?",
    "close": r"cl(?:ose)?",
    "court": r"c(?:our)?t",
    "place": r"pl(?:ace)?",
    "square": r"sq(?:uare)?",
    "boulevard": r"b(?:ou)?l?(?:e?var)?d",
}
_DE_ENDINGS = ("straße", "strasse")


def _letters(word: str) -> str:
    """A word as a pattern that ignores case (the flag) and spells ß either way."""
    return "".join("(?:ß|ss)" if ch in "ßẞ" else re.escape(ch) for ch in word)


def _word_pattern(word: str) -> str:
    low = word.lower().rstrip(".")
    if low in _STREET_TYPES:
        return _STREET_TYPES[low] + r"\.?"
    for ending in _DE_ENDINGS:
        if low.endswith(ending) and len(low) > len(ending):
            return _letters(word[: len(low) - len(ending)]) + r"str(?:a(?:ß|ss)e|\.)"
    return _letters(word)


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).casefold()


def _anchor(words: list[str]) -> str:
    """A substring any spelling of the street name contains (the cheap test before the regex)."""
    best = max(words, key=len).casefold()
    for ending in ("strasse", "straße"):
        if best.endswith(ending) and len(best) > len(ending):
            return best[: -len(ending)]
    return best if best.rstrip(".") not in _STREET_TYPES else best[:2]


@dataclass(frozen=True)
class Known:
    """One order's address, masked wherever it shows in that order's carrier text."""

    streets: tuple[str, ...] = ()  # street and house number, as the store sent them
    postcodes: tuple[str, ...] = ()

    @classmethod
    def of(cls, streets: Iterable[str], postcodes: Iterable[str]) -> Known | None:
        """The needles worth looking for (None when there are none)."""
        s = tuple(dict.fromkeys(x.strip() for x in streets if len(re.sub(r"[\W\d_]", "", x)) >= 3))
        p = tuple(dict.fromkeys(c for c in (_compact(x) for x in postcodes) if len(c) >= 4))
        return cls(s, p) if s or p else None

    @cached_property
    def _anchors(self) -> tuple[str, ...]:
        out = [c.casefold() for c in self.postcodes]
        for street in self.streets:
            words = re.findall(r"[^\W\d_][\w'’.-]*", street)
            if words:
                out.append(_anchor(words))
        return tuple(out)

    @cached_property
    def postcode_re(self) -> re.Pattern[str] | None:
        if not self.postcodes:
            return None
        alts = [r"[\s-]*".join(map(re.escape, c)) for c in self.postcodes]
        return re.compile(
            rf"(?<![A-Za-z0-9])(?:[A-Z]{{1,2}}-\s?)?(?:{'|'.join(alts)})(?![A-Za-z0-9])", re.IGNORECASE
        )

    @cached_property
    def street_re(self) -> re.Pattern[str] | None:
        alts = []
        for street in self.streets:
            numbers = re.findall(r"(?<!\w)\d{1,5}(?:\s*[A-Za-z](?![\w]))?", street)
            words = re.findall(r"[^\W\d_][\w'’.-]*", re.sub(r"(?<!\w)\d{1,5}\s*[A-Za-z]?(?!\w)", " ", street))
            if not words:
                continue
            name = r"(?<![\w])" + r"\s*".join(_word_pattern(w) for w in words) + r"(?![\w])"
            if numbers:
                number = (
                    "(?:" + "|".join(r"\s*".join(map(re.escape, n.replace(" ", ""))) for n in numbers) + ")"
                )
                house = rf"(?<![\w]){number}(?![\w])"
                name = rf"(?:{house}\s*,?\s*)?{name}(?:\s*,?\s*{house})?"
            alts.append(name)
        return re.compile("|".join(alts), re.IGNORECASE) if alts else None

    def may_hold(self, text: str) -> bool:
        squashed = _squash(text)
        return any(a in squashed for a in self._anchors)


def _compact(postcode: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "", postcode).upper()


# -- messages ----------------------------------------------------------------------------
@lru_cache(maxsize=8192)  # carrier texts repeat a lot; this pass depends on the text alone
def _scrub_generic(text: str) -> str:
    text = _EMAIL.sub(MASK, text)
    text = _PHONE.sub(_mask_phone, text)
    text = _POSTCODE.sub(MASK, text)
    text = _ADDRESS.sub(MASK, text)
    return _SIGNER.sub(_mask_signer, text)


def scrub_text(text: str, known: Known | None = None) -> str:
    """Mask personal data in carrier free text: the order's own address (`known`), signer
    names, e-mails, phone numbers, postcodes and street addresses."""
    if known is not None and known.may_hold(text):
        if known.street_re is not None:
            text = known.street_re.sub(MASK, text)
        if known.postcode_re is not None:
            text = known.postcode_re.sub(MASK, text)
    return _scrub_generic(text)


# -- locations ---------------------------------------------------------------------------
def _place_part(part: str, known: Known | None) -> str:
    """One comma-separated part of a location: without postcodes, or "" when it must go."""
    kept = part
    if known is not None and known.may_hold(part):
        if known.street_re is not None and known.street_re.search(part):
            return ""
        if known.postcode_re is not None:
            kept = known.postcode_re.sub(" ", kept)
    kept = _POSTCODE.sub(" ", kept)
    if _ADDRESS.search(kept):
        return ""
    if _mask_people(kept) != kept:
        return ""
    return " ".join(kept.split()).strip(" -/")


def _scrub_place(text: str, known: Known | None) -> str:
    parts = text.split(",")
    kept = [_place_part(p, known) for p in parts]
    if all(k == p.strip() for k, p in zip(kept, parts, strict=True)):
        return text  # untouched: the carrier's spelling, byte for byte
    return ", ".join(k for k in kept if k)


@lru_cache(maxsize=8192)
def _scrub_place_generic(text: str) -> str:
    return _scrub_place(text, None)


def scrub_location(text: str, known: Known | None = None) -> str:
    """A carrier's location with only city, region and country left (see the module's rule)."""
    if known is not None and known.may_hold(text):
        return _scrub_place(text, known)
    return _scrub_place_generic(text)
