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
