"""The one sanitizer every ingestion path uses before anything is stored.

Carrier payloads are decoded into whitelisted structs (unknown fields are dropped by the
decoder); the free text that remains is scrubbed here: names after "signed for by", "received
by" and the like, e-mail addresses and phone numbers are masked.
"""

from __future__ import annotations

import re
from functools import lru_cache

MASK = "***"

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
_PHONE = re.compile(r"(?<![\w])\+?\d[\d\s().-]{6,}\d(?![\w])")


def _mask_signer(m: re.Match[str]) -> str:
    first = m.group("name").split()[0].lower().strip(".")
    if first in _NOT_NAMES:
        return m.group(0)
    return m.group("lead") + MASK


@lru_cache(maxsize=8192)  # carrier texts repeat a lot; the result depends on the text alone
def scrub_text(text: str) -> str:
    """Mask personal data in carrier free text: signer names, e-mails, phone numbers."""
    text = _EMAIL.sub(MASK, text)
    text = _PHONE.sub(MASK, text)
    return _SIGNER.sub(_mask_signer, text)
