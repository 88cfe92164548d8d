"""JSON nesting depth is checked on the raw text, before anything parses it (issue 16)."""
from __future__ import annotations

import io
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.documents import MAX_DEPTH, check_json_depth, nesting_depth
from bus.errors import DecodeError
from bus.routes.model import Endpoint, QueueOptions, RetryPolicy, Route
from connectors.amqp_in import raw_document
from connectors.http_push.app import Gateway, Refusal


def nested(depth: int, kind: str = "[") -> bytes:
    close = {"[": "]", "{": "}"}[kind]
    if kind == "{":
        return ('{"a":' * depth + "1" + close * depth).encode() if depth else b"1"
    return (kind * depth + close * depth).encode()


def depth_of(value) -> int:
    """The depth of a parsed document, walked without recursion (the test's own oracle)."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, above = todo.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, above + 1)
            todo.extend((child, above + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


@pytest.mark.parametrize("kind", ["[", "{"])
def test_a_document_exactly_at_the_limit_passes_and_one_level_more_is_refused_naming_the_limit(kind):
    # Given documents of MAX_DEPTH and MAX_DEPTH + 1 levels of arrays or objects
    at_limit, over = nested(MAX_DEPTH, kind), nested(MAX_DEPTH + 1, kind)
    # When they are checked  Then the first passes and parses
    check_json_depth(at_limit)
    assert depth_of(json.loads(at_limit)) == MAX_DEPTH
    # and the second is the bus's own DecodeError, naming its depth and the limit
    with pytest.raises(DecodeError, match=f"nested {MAX_DEPTH + 1} levels deep; at most {MAX_DEPTH}"):
        check_json_depth(over)


def test_100000_levels_are_refused_quickly_without_recursion():
    # Given 100,000 levels, which make json.loads raise RecursionError
    deep = nested(100_000)
    with pytest.raises(RecursionError):
        json.loads(deep)
    # When checked  Then a DecodeError, at once
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="nested 100000 levels deep"):
        check_json_depth(deep)
    assert time.perf_counter() - started < 1
    # and an unclosed deep document (never valid JSON) is refused the same way
    with pytest.raises(DecodeError):
        check_json_depth(b"[" * 100_000)


def test_brackets_inside_strings_do_not_count_even_after_escaped_quotes_and_backslashes():
    # Given one-level documents whose strings hold thousands of brackets, escaped quotes and backslashes
    documents = [json.dumps(["[" * 5000]), json.dumps({"k": "{" * 5000, "[[[": "]]]"}),
                 json.dumps(['\\"[[[[', "\\", '"', "[" * 100]), json.dumps(["\\\\\\" + "[" * 100])]
    for text in documents:
        # When checked  Then their depth is that of the parsed document, and they pass
        assert nesting_depth(text) == depth_of(json.loads(text)) == 1, text
        check_json_depth(text)
        check_json_depth(text.encode())


def test_a_deep_document_hidden_from_a_byte_scan_by_utf16_is_still_seen():
    # Given a deep document in UTF-16 (json.loads takes it), with a character whose
    # second byte is a quote in a string before the brackets
    text = json.dumps(["\u2200", "x"], ensure_ascii=False)[:-1] + "," + "[" * 100 + "]" * 100 + "]"
    raw = text.encode("utf-16-le")
    assert depth_of(json.loads(raw)) == 101
    # When checked  Then its real depth is refused
    with pytest.raises(DecodeError, match="nested 101 levels"):
        check_json_depth(raw)


def test_a_huge_flat_document_passes_in_well_under_a_second():
    # Given a 10 MB document, two levels deep, of 200,000 objects with strings and numbers
    document = json.dumps([{"meter": f"UPM{n:08d}", "value": n / 3, "note": "a [b] {c}"} for n in range(200_000)])
    document = document.encode()
    assert len(document) > 10_000_000
    # When checked  Then it passes, at 2 levels, quickly
    started = time.perf_counter()
    assert nesting_depth(document) == 2
    check_json_depth(document)
    assert time.perf_counter() - started < 2


def test_scalars_and_empty_text_have_depth_0():
    for raw in (b"", b"1", b'"[["', b"null", "\"\\u005b\""):
        assert nesting_depth(raw) == 0


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(alphabet=st.sampled_from('[]{}"\\ab\u2200\x00\n')),
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), children, max_size=4),
                           max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES, st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32-be"]), st.booleans())
def test_property_the_depth_of_any_json_text_is_the_depth_of_its_parsed_document(value, encoding, ascii_only):
    # Given any JSON value, written in any encoding json.loads reads
    raw = json.dumps(value, ensure_ascii=ascii_only).encode(encoding)
    # When its depth is measured on the raw bytes  Then it is what the parser finds
    assert nesting_depth(raw) == depth_of(json.loads(raw))


JSONISH = st.binary(max_size=300) | st.lists(st.sampled_from(
    [b"[", b"]", b"{", b"}", b'"', b"\\", b":", b",", b"1", b"a", b"\xff", b"\x00", b"\xe2\x88\x80"]),
    max_size=300).map(b"".join)


@settings(max_examples=1000, deadline=None)
@given(JSONISH, st.integers(min_value=0, max_value=80))
def test_property_any_bytes_either_pass_or_raise_the_bus_decode_error(raw, limit):
    # Given any bytes, JSON-ish or not  When checked against any limit
    try:
        check_json_depth(raw, limit)
    except DecodeError:
        return  # Then it is refused with the bus's own error
    # or it passes, and then nothing the parser does with it can recurse deeper than the limit
    try:
        parsed = json.loads(raw)
    except ValueError:
        return
    assert depth_of(parsed) <= limit


def route_for(connector: str, **options) -> Route:
    return Route(id="r", use_case=2, description="", source=Endpoint("hes-a", connector, options),
                 method="push", transform=(), destinations=(), retry=RetryPolicy(), queue=QueueOptions(), message={},
                 file="t.yaml", line=1)


def test_the_gateway_body_of_refuses_a_deep_json_body_with_400_too_deep_before_parsing_it():
    # Given a push route taking 4 MB, and a 100,000-deep body
    route = route_for("http-push", path="p", max_body_kb=4096, format="json")
    body = nested(100_000)
    environ = {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    # When the gateway reads it  Then a 400 refusal naming the limit
    with pytest.raises(Refusal) as refused:
        Gateway.body_of(environ, route, "json")
    assert refused.value.args[:2] == (400, "TOO_DEEP") and f"at most {MAX_DEPTH}" in refused.value.args[2]


def test_the_gateway_body_of_refuses_an_integer_python_will_not_read_as_malformed_not_500():
    # Given a body of one integer with 5,000 digits (json.loads raises a plain ValueError)
    route = route_for("http-push", path="p", max_body_kb=64, format="json")
    body = b"[" + b"7" * 5000 + b"]"
    environ = {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    # When the gateway reads it  Then a 400 MALFORMED_JSON refusal
    with pytest.raises(Refusal) as refused:
        Gateway.body_of(environ, route, "json")
    assert refused.value.args[:2] == (400, "MALFORMED_JSON")


def test_the_amqp_ingress_refuses_too_large_too_deep_and_not_json_with_decode_errors_before_parsing():
    # Given the ingress's reading of one raw message, with a limit of 1 KB
    # When a message is over it, too deep, or not JSON  Then a DecodeError saying which
    with pytest.raises(DecodeError, match="too large: 2000 bytes"):
        raw_document(b" " * 2000, 1024)
    with pytest.raises(DecodeError, match="levels deep"):
        raw_document(nested(1000), 1_000_000)
    with pytest.raises(DecodeError, match="not JSON"):
        raw_document(b"{nope", 1024)
    with pytest.raises(DecodeError, match="not JSON"):
        raw_document(b"7" * 5000, 10_000)
    # and a good one is its JSON
    assert raw_document(b'{"alarm_id": "a-1"}', 1024) == {"alarm_id": "a-1"}
