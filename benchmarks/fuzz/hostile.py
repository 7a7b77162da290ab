"""Hypothesis strategies for hostile requests: a valid request with a few of its parts made
hostile, and the bytes that request is on the wire.

A body is a tree of JSON values in which two extra node kinds stand for what `json.dumps`
cannot write: `Raw` (bytes put in verbatim: invalid UTF-8 inside a string, a raw NUL, `NaN`, a
number too long for any parser) and `Nest` (arrays or objects nested `depth` deep). Each
mutation names its class (`tag`), so the 5xx found can be grouped and each group minimized by
`benchmarks.fuzz.minimize` on the same tree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from benchmarks.fuzz.catalog import Endpoint, FuzzWorld, valid


@dataclass(frozen=True)
class Raw:
    data: bytes


@dataclass(frozen=True)
class Nest:
    depth: int
    opener: str = "["  # "[" or '{"a":'


@dataclass
class Case:
    endpoint: Endpoint
    body: Any  # a tree (see the module docstring), or None
    params: dict[str, str]
    query: dict[str, str]
    auth: str  # right, wrong, none, stale (webhooks: a signature five minutes old and more)
    idempotency_key: str | None
    tags: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return "+".join(sorted(set(self.tags))) or "valid"


def encode(node: Any) -> bytes:
    """The tree as JSON bytes (hostile where the tree says so)."""
    if isinstance(node, Raw):
        return node.data
    if isinstance(node, Nest):
        closer = "]" if node.opener == "[" else "}"
        return (node.opener * node.depth + closer * node.depth).encode()
    if isinstance(node, dict):
        items = []
        for k, v in node.items():
            key = k.data if isinstance(k, Raw) else json.dumps(k).encode()
            items.append(key + b":" + encode(v))
        return b"{" + b",".join(items) + b"}"
    if isinstance(node, list):
        return b"[" + b",".join(encode(v) for v in node) + b"]"
    return json.dumps(node).encode()  # lone surrogates come out as \\ud800 escapes


def form(node: Any) -> bytes:
    """A form body: `k=v&…`, values written as they are (hostile bytes included)."""
    if not isinstance(node, dict):
        return encode(node)
    parts = []
    for k, v in node.items():
        value = v.data if isinstance(v, Raw) else str(v).encode("utf-8", "surrogatepass")
        parts.append(str(k).encode("utf-8", "surrogatepass") + b"=" + value)
    return b"&".join(parts)


TIMES = (
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "0000-00-00T00:00:00Z",
    "2026-02-30T12:00:00Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01T00:00:00",
    "2026-01-01T00:00:00+99:99",
    "+275760-09-13T00:00:00Z",
    "2026-01-01T00:00:00.1234567891234Z",
    "2026-01-01",
    "1970-01-01T00:00:00Z",
    "now",
)
NUMBERS: tuple[Any, ...] = (
    10**30,
    -(10**30),
    2**63,
    2**64,
    -(2**63) - 1,
    1e308,
    -1e308,
    5e-324,
    -0.0,
    0,
    -1,
    Raw(b"1e999"),
    Raw(b"-1e999"),
    Raw(b"NaN"),
    Raw(b"Infinity"),
    Raw(b"1" * 5000),
    Raw(b"0x10"),
    Raw(b"01"),
)
STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff\ud800",
    "\U0001f4e6" * 50,
    "é" * 3000,
    "A" * 60_000,
    "\u202e\u0000\ufeff",
    "../../../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "%s%n%x",
    "null",
    "ÄÖÜ==",
    "AAAA\u00e9",
    "====",
    "A",
    "\n\r\t",
)
BYTES = (
    (b'"\xff"', "invalid_utf8"),
    (b'"\xc3\x28"', "invalid_utf8"),
    (b'"\xed\xa0\x80"', "invalid_utf8"),  # a surrogate, UTF-8-encoded: not valid UTF-8
    (b'"a\x00b"', "raw_nul"),
    (b'"\\u0000"', "nul"),
    (b'"\\ud800"', "lone_surrogate"),
    (b'"\\uDFFF"', "lone_surrogate"),
    (b'"\\x41"', "bad_escape"),
    (b'"unterminated', "truncated"),
)


def _string_tag(s: str) -> str:
    if any(0xD800 <= ord(c) <= 0xDFFF for c in s):
        return "lone_surrogate"
    if "\x00" in s:
        return "nul"
    if len(s) > 1000:
        return "long_string"
    return "odd_string"


def _hostile() -> st.SearchStrategy[tuple[Any, str]]:
    """One hostile value and its class."""
    return st.one_of(
        st.sampled_from(TIMES).map(lambda t: (t, "extreme_time")),
        st.sampled_from(NUMBERS).map(
            lambda v: (v, "huge_number" if not isinstance(v, Raw) else "bad_number")
        ),
        st.sampled_from(STRINGS).map(lambda s: (s, _string_tag(s))),
        st.sampled_from(BYTES).map(lambda b: (Raw(b[0]), b[1])),
        st.builds(Nest, st.sampled_from([64, 300, 1000, 3000]), st.sampled_from(["[", '{"a":'])).map(
            lambda n: (n, "deep_nesting")
        ),
        st.sampled_from([[], {}, True, None, [[]], {"": None}, [1, "a", None]]).map(
            lambda v: (v, "wrong_type")
        ),
        st.text(max_size=40).map(lambda s: (s, "random_text")),
        st.integers().map(lambda i: (i, "random_int")),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda f: (f, "random_float")),
    )


PATH_VALUES = ("%FF", "%00", "%C3%28", "%ED%A0%80", "a" * 3000, "..%2F..%2F", "%E2%80%AE", "-1", "%20", "é")
QUERY_VALUES = ("", "-1", "1e309", "NaN", "inf", "99999999999999999999999", "0x10", "１", "%FF", "a" * 3000)
IDEMPOTENCY_KEYS = (None, None, "k" * 300, "\u00ff\u00fe", "a b", "%00")


HOSTILE = _hostile()  # built once: a strategy made per draw costs hypothesis more than the draw
INDEX = st.integers(0, 1 << 16)
WHERE = st.sampled_from(["body", "body", "body", "whole", "param", "query"])
BODY_OP = st.sampled_from(["replace", "replace", "replace", "delete", "add"])
MUTATIONS = st.integers(0, 3)
PARAM = st.one_of(st.sampled_from(PATH_VALUES), st.text(min_size=1, max_size=20))
QUERY = st.one_of(st.sampled_from(QUERY_VALUES), st.text(max_size=20))
AUTH = st.sampled_from(["right"] * 8 + ["wrong", "none"])
AUTH_WEBHOOK = st.sampled_from(["right"] * 8 + ["wrong", "none", "stale"])
KEY = st.sampled_from(IDEMPOTENCY_KEYS)


def pick(draw: st.DrawFn, items: list[Any]) -> Any:
    return items[draw(INDEX) % len(items)]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside the tree (dict keys and list indexes)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append((*prefix, i))
            out += paths(v, (*prefix, i))
    return out


def replaced(node: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    """A copy of the tree with the value at `path` replaced (or deleted)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        copy = dict(node)
        if rest:
            copy[head] = replaced(node[head], rest, value, delete=delete)
        elif delete:
            copy.pop(head, None)
        else:
            copy[head] = value
        return copy
    items = list(node)
    if rest:
        items[head] = replaced(items[head], rest, value, delete=delete)
    elif delete:
        items.pop(head)
    else:
        items[head] = value
    return items


def value_at(node: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        node = node[p]
    return node


@st.composite
def cases(draw: st.DrawFn, ep: Endpoint, world: FuzzWorld, n: int) -> Case:
    """A request for `ep`: the valid one with 0–3 of its parts made hostile."""
    v = valid(ep, world, n)
    body: Any = v.body
    params, query = dict(v.params), dict(v.query)
    tags: list[str] = []
    for _ in range(draw(MUTATIONS)):
        where = draw(WHERE)
        if where == "body" and body is not None and paths(body):
            path = pick(draw, paths(body))
            op = draw(BODY_OP)
            if op == "delete":
                body, tag = replaced(body, path, None, delete=True), "missing_field"
            elif op == "add" and isinstance(value_at(body, path[:-1]), dict):
                value, tag = draw(HOSTILE)
                body, tag = replaced(body, (*path[:-1], "zz_unknown"), value), f"unknown_field_{tag}"
            else:
                value, tag = draw(HOSTILE)
                body = replaced(body, path, value)
            tags.append(tag)
        elif where == "whole" and ep.body != "none":
            body, tag = draw(HOSTILE)
            tags.append(f"whole_{tag}")
        elif where == "param" and params:
            params[pick(draw, sorted(params))] = draw(PARAM)
            tags.append("path_param")
        elif where == "query" and ep.query:
            query[pick(draw, list(ep.query))] = draw(QUERY)
            tags.append("query")
    auth = draw(AUTH_WEBHOOK if ep.auth == "webhook" else AUTH)
    if auth != "right" and ep.auth != "none":
        tags.append(f"auth_{auth}")
    key = draw(KEY) if ep.idempotent else None
    if ep.idempotent and key is None:
        key = f"fz-k-{n}"
    return Case(ep, body, params, query, auth, key, tags)
