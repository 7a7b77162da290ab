"""The one place aggregator status vocabularies become waypost's normalized statuses.

Each provider has a table for its main status (EasyPost `status`, AfterShip `tag`) and one for
its sub-status (EasyPost `status_detail`, AfterShip `subtag`). A sub-status entry is either a
status that overrides the main one or None: "known, the main status decides". A code in
neither table is never rejected: it maps to `DEFAULT_STATUS` (or to what the main status says)
and is reported back so the endpoint can count it (`waypost_aggregator_unknown_codes_total`).

Sources: EasyPost's Tracker object reference (https://docs.easypost.com/docs/trackers, the
`status` and `status_detail` lists) and AfterShip's "Delivery Statuses" and "Delivery
Sub-statuses" enums (https://www.aftership.com/docs/tracking/enum/delivery-statuses,
https://www.aftership.com/docs/tracking/enum/delivery-sub-statuses, and the 2026-07 webhook
changelog for the newest subtags). The README repeats these tables; keep them in step.
"""

from __future__ import annotations

from typing import NamedTuple

from sync.entities import Status

# Where an unknown code lands: not final, not alarming, and a later known event corrects it.
DEFAULT_STATUS: Status = "in_transit"


class Mapped(NamedTuple):
    status: Status
    unknown: tuple[str, ...]  # codes found in no table, to be counted


EASYPOST_STATUS: dict[str, Status] = {
    "unknown": DEFAULT_STATUS,  # EasyPost could not classify the scan itself
    "pre_transit": "info_received",
    "in_transit": "in_transit",
    "out_for_delivery": "out_for_delivery",
    "delivered": "delivered",
    "available_for_pickup": "available_for_pickup",
    "return_to_sender": "returned",
    "failure": "exception",
    "cancelled": "exception",
    "error": "exception",
}

EASYPOST_DETAIL: dict[str, Status | None] = {
    "address_correction": None,
    "arrived_at_destination": None,
    "arrived_at_facility": None,
    "arrived_at_pickup_location": "available_for_pickup",
    "awaiting_information": None,
    "cancelled": "exception",
    "damaged": "exception",
    "delayed": None,
    "delivery_exception": "attempt_fail",  # the carrier reached the door and could not deliver
    "departed_facility": None,
    "departed_origin_facility": None,
    "expired": "expired",
    "failure": None,
    "held": None,
    "in_transit": None,
    "label_created": "info_received",
    "lost": "exception",
    "missorted": None,
    "out_for_delivery": None,
    "received_at_destination_facility": None,
    "received_at_origin_facility": None,
    "refused": "exception",
    "return": "returned",
    "status_update": None,
    "transferred_to_destination_carrier": None,
    "transit_exception": None,
    "unknown": None,
    "weather_delay": None,
}

AFTERSHIP_TAG: dict[str, Status] = {
    "Pending": "pending",
    "InfoReceived": "info_received",
    "InTransit": "in_transit",
    "OutForDelivery": "out_for_delivery",
    "AttemptFail": "attempt_fail",
    "Delivered": "delivered",
    "AvailableForPickup": "available_for_pickup",
    "Exception": "exception",
    "Expired": "expired",
}


def _codes(prefix: str, numbers: range | tuple[int, ...]) -> dict[str, Status | None]:
    return {f"{prefix}_{n:03d}": None for n in numbers}


AFTERSHIP_SUBTAG: dict[str, Status | None] = {
    **_codes("Pending", range(1, 7)),
    **_codes("InfoReceived", (1,)),
    **_codes("InTransit", (*range(1, 10), 11, 12, 13)),
    **_codes("OutForDelivery", (1, 3, 4)),
    # Retired: AfterShip replaced it with AvailableForPickup_001; old trackings may still say it.
    "OutForDelivery_002": "available_for_pickup",
    **_codes("AttemptFail", range(1, 4)),
    **_codes("Delivered", range(1, 6)),
    **_codes("AvailableForPickup", (1,)),
    **_codes("Exception", (*range(1, 14), *range(16, 22))),
    "Exception_010": "returned",  # returning to sender
    "Exception_011": "returned",  # returned to sender
    **_codes("Expired", (1,)),
}


def easypost_status(status: str | None, detail: str | None) -> Mapped:
    """A TrackingDetail's `status` and `status_detail` → a waypost status.

    The detail refines the status (`in_transit` + `arrived_at_pickup_location` is ready for
    pickup), except that nothing overrides `delivered`.
    """
    unknown: list[str] = []
    code = status or ""
    base = EASYPOST_STATUS.get(code)
    if base is None:
        unknown.append(code or "(none)")
        base = DEFAULT_STATUS
    if detail:
        if detail not in EASYPOST_DETAIL:
            unknown.append(detail)
        else:
            refined = EASYPOST_DETAIL[detail]
            if refined is not None and base != "delivered":
                base = refined
    return Mapped(base, tuple(unknown))


def aftership_status(tag: str | None, subtag: str | None) -> Mapped:
    """A checkpoint's `tag` and `subtag` → a waypost status.

    A known subtag with an entry of its own wins (Exception_010 is a return); otherwise the tag
    decides. An unknown tag falls back to a known subtag's family (`Delivered_001` → Delivered).
    """
    unknown: list[str] = []
    base = AFTERSHIP_TAG.get(tag or "")
    if base is None:
        unknown.append(tag or "(none)")
        family = (subtag or "").partition("_")[0]
        base = AFTERSHIP_TAG.get(family, DEFAULT_STATUS) if subtag in AFTERSHIP_SUBTAG else DEFAULT_STATUS
    if subtag:
        if subtag not in AFTERSHIP_SUBTAG:
            unknown.append(subtag)
        else:
            override = AFTERSHIP_SUBTAG[subtag]
            if override is not None:
                base = override
    return Mapped(base, tuple(unknown))
