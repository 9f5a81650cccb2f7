"""SSE decoding across arbitrary chunk boundaries and line endings; encoding round-trips."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from sidecar.wire.sse import SSEDecoder, SSEMessage, encode_event, encode_sse

SAMPLES = Path(__file__).parent.parent / "fixtures" / "samples"


def decode_all(chunks: list[bytes]) -> list[SSEMessage]:
    decoder = SSEDecoder()
    messages: list[SSEMessage] = []
    for chunk in chunks:
        messages += decoder.feed(chunk)
    return messages + decoder.flush()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


event_names = st.none() | st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=1, max_size=12
)
payloads = st.text(st.characters(codec="utf-8", exclude_characters="\r"), max_size=40).map(str.encode)


@given(
    messages=st.lists(st.tuples(event_names, payloads), min_size=1, max_size=6),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_any_chunking_and_line_ending_decodes_the_same_messages(
    messages: list[tuple[str | None, bytes]], eol: bytes, cuts: list[int]
) -> None:
    stream = b"".join(encode_sse(name, data) for name, data in messages).replace(b"\n", eol)
    decoded = decode_all(split_at(stream, cuts))
    assert decoded == [SSEMessage(event=name, data=data) for name, data in messages]


@given(cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30))
def test_real_llamacpp_chat_stream_under_any_chunking(cuts: list[int]) -> None:
    raw = (SAMPLES / "chat_stream.txt").read_bytes()
    decoded = decode_all(split_at(raw, cuts))
    assert decoded == decode_all([raw])
    assert decoded[-1].is_done
    assert all(m.event is None for m in decoded)
    chunks = [orjson.loads(m.data) for m in decoded[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_real_llamacpp_responses_stream_names_each_event_by_its_type() -> None:
    decoded = decode_all([(SAMPLES / "responses_stream.txt").read_bytes()])
    assert len(decoded) > 5
    for message in decoded:
        assert message.event == orjson.loads(message.data)["type"]
    assert not any(m.is_done for m in decoded)  # llama.cpp's Responses stream has no [DONE]


def test_crlf_split_between_cr_and_lf_is_one_line_break() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []  # the LF completes the CRLF; it is not a blank line
    assert decoder.feed(b"\r\n") == [SSEMessage(None, b"a")]


def test_comments_ids_retry_and_unknown_fields_are_ignored() -> None:
    stream = b": keep-alive\nid: 7\nretry: 100\nfoo: bar\nevent: x\ndata: 1\n\n"
    assert decode_all([stream]) == [SSEMessage("x", b"1")]


def test_multi_line_data_joins_with_newline_and_space_after_colon_is_optional() -> None:
    assert decode_all([b"data:a\ndata:  b\ndata\n\n"]) == [SSEMessage(None, b"a\n b\n")]


def test_event_without_data_is_not_dispatched_and_event_name_resets() -> None:
    assert decode_all([b"event: lonely\n\ndata: x\n\n"]) == [SSEMessage(None, b"x")]


def test_byte_order_mark_is_skipped_even_when_split() -> None:
    assert decode_all([b"\xef", b"\xbb", b"\xbfdata: x\n\n"]) == [SSEMessage(None, b"x")]


def test_flush_dispatches_an_event_left_without_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    flushed = decoder.flush()
    assert flushed == [SSEMessage(None, b"[DONE]")]
    assert flushed[0].is_done
    assert decoder.flush() == []


def test_encode_sse_exact_bytes() -> None:
    assert encode_sse("response.created", b'{"a":1}') == b'event: response.created\ndata: {"a":1}\n\n'
    assert encode_sse(None, b"[DONE]") == b"data: [DONE]\n\n"
    assert encode_sse(None, b"a\nb") == b"data: a\ndata: b\n\n"


def test_encode_event_names_the_frame_by_type() -> None:
    frame = encode_event({"type": "response.output_text.delta", "delta": "hi", "sequence_number": 3})
    (message,) = decode_all([frame])
    assert message.event == "response.output_text.delta"
    assert orjson.loads(message.data)["delta"] == "hi"
