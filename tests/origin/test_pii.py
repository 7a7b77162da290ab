"""Personal data at rest: sealed field by field, nothing readable in the file, WAL or backups."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import psycopg
import pytest
from psycopg import sql

from origin import pii
from origin.errors import KeyUnavailable
from origin.orders import Address, Customer, Destination, Private, private_fields
from origin.settings import OriginSettings
from origin.store.postgres import TABLES
from tests.conftest import PII_ENCRYPTION_KEYS, Origin

ROOT = Path(__file__).resolve().parents[2]
SECRET = {
    "name": "Zelda Quackenbush",
    "email": "zelda.q@example.org",
    "phone": "+49 30 98765432",
    "address": {"street": "Geheimweg 42", "postcode": "QX7 4ZZ", "city": "Hamburg", "country": "DE"},
}
SECRET_STRINGS = ("Zelda Quackenbush", "zelda.q@example.org", "+49 30 98765432", "Geheimweg 42", "QX7 4ZZ")


def ring(*kids: str) -> pii.Keyring:
    """A ring of the tests' key `t1` and/or fresh keys, newest first."""
    return pii.Keyring.parse(" ".join(PII_ENCRYPTION_KEYS if k == "t1" else pii.new_key(k) for k in kids))


def world_strings(origin: Origin, n: int = 30) -> list[str]:
    out: list[str] = []
    for o in list(origin.world.orders())[:n]:
        out += [o.customer.name, o.customer.email, o.customer.phone, o.customer.street]
    return out


def test_a_record_seals_field_by_field_and_opens() -> None:
    keys = ring("t1")
    fields = private_fields(
        Private(
            customer=Customer(name="Ann", email="ann@example.org", address=Address(street="Elm 1")),
            destination=Destination(lat=53.55, lon=9.99, postcode="20095", city="Hamburg", country="DE"),
        )
    )
    blob = pii.seal(keys, "o-1", fields)
    assert b"Ann" not in blob and b"Hamburg" not in blob and b"20095" not in blob
    assert pii.kids_of(blob) == {"t1"}
    assert pii.open_pii(keys, "o-1", blob) == {k: v for k, v in fields.items() if v != ""}


def test_a_token_moved_to_another_row_or_field_does_not_open() -> None:
    keys = ring("t1")
    blob = pii.seal(keys, "o-1", {"customer.name": "Ann", "customer.email": "ann@example.org"})
    with pytest.raises(KeyUnavailable, match="'t1'"):
        pii.open_pii(keys, "o-2", blob)
    tokens = msgspec.msgpack.decode(blob)["sealed"]
    swapped = msgspec.msgpack.encode(
        {"sealed": {"customer.name": tokens["customer.email"], "customer.email": tokens["customer.name"]}}
    )
    with pytest.raises(KeyUnavailable, match=r"order 'o-1' \(customer\.\w+\)"):
        pii.open_pii(keys, "o-1", swapped)


def test_rotation_old_keys_open_new_writes_use_the_newest() -> None:
    old = ring("t1")
    blob = pii.seal(old, "o-1", {"customer.name": "Ann"})
    rotated = pii.Keyring((ring("k2").newest, *old.keys))
    assert pii.open_pii(rotated, "o-1", blob) == {"customer.name": "Ann"}
    assert pii.kids_of(pii.seal(rotated, "o-1", {"customer.name": "Ann"})) == {"k2"}
    with pytest.raises(KeyUnavailable, match="key 't1', which is not in WAYPOST_PII_ENCRYPTION_KEYS"):
        pii.open_pii(pii.Keyring(rotated.keys[:1]), "o-1", blob)


def test_a_wrong_key_under_the_same_id_is_named() -> None:
    blob = pii.seal(ring("t1"), "o-1", {"customer.name": "Ann"})
    impostor = pii.Keyring.parse(pii.new_key("t1"))
    with pytest.raises(KeyUnavailable, match="does not open with key 't1'"):
        pii.open_pii(impostor, "o-1", blob)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        ("nokid", "entry 1 is not <kid>:<base64url key>"),
        ("k1:c2hvcnQ", "key 'k1' is 5 bytes; it must be 32"),
        ("k1:!!!", "key 'k1' is not base64url"),
        (f"{pii.new_key('k1')} {pii.new_key('k1')}", "key id 'k1' appears twice"),
    ],
)
def test_a_bad_key_setting_is_refused_naming_the_entry(text: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=problem):
        pii.Keyring.parse(text)
    env = {**_env(), "WAYPOST_PII_ENCRYPTION_KEYS": text}
    with pytest.raises(SystemExit, match="WAYPOST_PII_ENCRYPTION_KEYS"):
        OriginSettings.from_env(env, data_dir=tmp_path)


def test_serve_refuses_to_start_without_a_key_unless_insecure_dev(tmp_path: Path) -> None:
    env = {k: v for k, v in _env().items() if k != "WAYPOST_PII_ENCRYPTION_KEYS"}
    with pytest.raises(SystemExit, match="missing settings WAYPOST_PII_ENCRYPTION_KEYS"):
        OriginSettings.from_env(env, data_dir=tmp_path)
    dev = OriginSettings.from_env(env, insecure_dev=True, data_dir=tmp_path)
    assert dev.pii_keyring is not None and dev.pii_keyring.newest.kid == "dev"


def _env() -> dict[str, str]:
    return {
        "WAYPOST_WEBHOOK_SECRET": "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
        "WAYPOST_EDGE_TOKEN": "e",
        "WAYPOST_ADMIN_TOKEN": "a",
        "WAYPOST_LINK_SECRET": "l",
        "WAYPOST_PII_KEY": "p",
        "WAYPOST_POSTCODE_KEY": "q",
        "WAYPOST_PII_ENCRYPTION_KEYS": PII_ENCRYPTION_KEYS,
    }


def _cli(origin: Origin, *args: str, env: dict[str, str] | None = None) -> str:
    store = ["--store", origin.settings.store_url] if origin.settings.store_url else []
    out = subprocess.run(
        [sys.executable, "-m", "origin", *args, "--data", str(origin.settings.data_dir), *store],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _raw_store_bytes(origin: Origin) -> bytes:
    """Every byte at rest: the SQLite file and its WAL, or (PostgreSQL) every table, copied out."""
    url = origin.settings.store_url
    if not url:
        path = origin.settings.data_dir / "origin.sqlite3"
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    out = bytearray()
    with psycopg.connect(url) as conn:
        for table in TABLES:
            with conn.cursor().copy(sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(table))) as copy:
                for data in copy:
                    out += bytes(data)
    return bytes(out)


def test_no_personal_data_is_readable_at_rest(origin: Origin, tmp_path: Path) -> None:
    r = origin.place_order("o-secret", customer=SECRET, postcode="QX7 4ZZ")
    assert r.status_code == 201, r.text
    backup = tmp_path / "backup.db"
    _cli(origin, "backup", str(backup))
    at_rest = {"store": _raw_store_bytes(origin), "backup": backup.read_bytes()}
    for where, data in at_rest.items():
        assert b"o-secret" in data, f"the {where} does not hold the order: the check would prove nothing"
        for text in (*SECRET_STRINGS, "Hauptstraße 5", *world_strings(origin)):
            assert text.encode() not in data, f"{text!r} readable in the {where}"
