"""Route message bodies: Celery's [args, kwargs, embed], encoded with orjson, readable whatever wrote them."""
import json
import math

from bus.task_message import decode_body, encode_body


def test_a_payload_travels_as_celerys_body_and_comes_back_unchanged():
    # Given a payload with text beyond ASCII and an integer beyond 64 bits (orjson refuses those)
    for payload in ({"meter": "UPM00000001", "note": "मीटर"}, {"big": 2 ** 70}, [1.5, None]):
        # When it is encoded  Then it is Celery's body, and decodes to the same payload
        body = encode_body(payload)
        args, kwargs, embed = json.loads(body)
        assert args == [payload] and kwargs == {} and embed["chain"] is None
        assert decode_body(body) == payload


def test_a_body_written_by_another_encoder_with_nan_is_still_read():
    # Given a body as the standard library writes a NaN  Then the payload is read, NaN and all
    assert math.isnan(decode_body(b'[[{"value": NaN}], {}, {}]')["value"])
