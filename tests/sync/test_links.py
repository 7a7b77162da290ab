from sync.links import sign_token, verify_token

SECRET = b"link-secret"


def test_a_signed_link_opens_its_own_shipment_until_it_expires() -> None:
    t = sign_token(SECRET, "1Z999", 2_000)
    assert verify_token(SECRET, t, "1Z999", now=1_999)
    assert not verify_token(SECRET, t, "1Z999", now=2_000)
    assert not verify_token(SECRET, t, "1Z998", now=1_000)


def test_tampered_foreign_and_cross_purpose_tokens_fail() -> None:
    t = sign_token(SECRET, "1Z999", 2_000)
    payload, mac = t.split(".")
    assert not verify_token(b"other", t, "1Z999", now=1_000)
    assert not verify_token(SECRET, payload + "." + mac[:-2] + "AA", "1Z999", now=1_000)
    forged = sign_token(b"other", "1Z999", 9_999).split(".")[0] + "." + mac
    assert not verify_token(SECRET, forged, "1Z999", now=1_000)
    assert not verify_token(SECRET, t, "1Z999", now=1_000, purpose="cookie")
    for junk in ("", ".", "abc", "a.b", "!!.??"):
        assert not verify_token(SECRET, junk, "1Z999", now=1_000)
