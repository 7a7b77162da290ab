from sync import checksum as cks
from sync.entities import Stock, encode_entity

STOCK_BODY = bytes.fromhex("84a7736974655f6964a27331a3736b75a27031a76f6e5f68616e640aa8726573657276656402")
SHIPMENT_BODY = bytes.fromhex(
    "82af747261636b696e675f6e756d626572a5315a393939a6737461747573aa696e5f7472616e736974"
)


def test_api_test_vector() -> None:
    a = cks.entity_hash("stock", "s1/p1", STOCK_BODY)
    b = cks.entity_hash("shipment", "1Z999", SHIPMENT_BODY)
    assert a == 17597287669986193292
    assert b == 15165180913215770440
    assert cks.add(cks.add(0, a), b) == 14315724509492412116


def test_stock_struct_encodes_to_the_vector_bytes() -> None:
    assert encode_entity(Stock(site_id="s1", sku="p1", on_hand=10, reserved=2)) == STOCK_BODY


def test_checksum_is_order_independent_and_a_delete_undoes_a_put() -> None:
    a = cks.entity_hash("stock", "s1/p1", STOCK_BODY)
    b = cks.entity_hash("shipment", "1Z999", SHIPMENT_BODY)
    assert cks.add(cks.add(0, a), b) == cks.add(cks.add(0, b), a)
    assert cks.sub(cks.add(cks.add(0, a), b), a) == b


def test_signed_storage_round_trips_every_u64() -> None:
    for u in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
        s = cks.to_signed(u)
        assert -(2**63) <= s < 2**63
        assert cks.to_unsigned(s) == u
