from datetime import UTC, datetime

from sync.bodies import pack, unpack
from sync.entities import Shipment, ShipmentEvent, Stock, encode_entity

T = datetime(2031, 1, 1, tzinfo=UTC)


def shipment() -> bytes:
    events = [
        ShipmentEvent(
            occurred_at=T,
            status="in_transit",
            message="Arrived at sorting facility",
            location="Hamburg Hub",
            received_at=T,
        )
    ] * 5
    return encode_entity(
        Shipment(
            tracking_number="1ZWP000000104729",
            carrier="ups",
            order_id="o-1",
            site_id="north-mfc-1",
            status="in_transit",
            eta=T,
            events=events,
            updated_at=T,
            version=5,
        )
    )


def test_packed_shipments_are_smaller_and_unpack_to_the_exact_bytes() -> None:
    body = shipment()
    packed = pack("shipment", body)
    assert packed[:2] == b"\x00\x01" and len(packed) < len(body) / 2
    assert unpack(packed) == body


def test_other_kinds_and_raw_bodies_pass_through() -> None:
    stock = encode_entity(Stock(site_id="s1", sku="p1", on_hand=1, reserved=0))
    assert pack("stock", stock) == stock
    assert unpack(stock) == stock
    assert unpack(shipment()) == shipment(), "a replica written before packing still reads"
