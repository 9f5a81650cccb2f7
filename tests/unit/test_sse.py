"""SSE decoding across arbitrary chunk boundaries and line endings; encoding round-trips."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from sidecar.wire.sse import SSEDecoder, SSEMessage, encode_event, encode_events, encode_sse

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


def reference_decode(stream: bytes) -> list[SSEMessage]:
    """The WHATWG algorithm line by line, as plainly as it reads: what the decoder's fast paths must match."""
    if stream.startswith(b"\xef\xbb\xbf"):
        stream = stream[3:]
    lines = stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    messages: list[SSEMessage] = []
    event: str | None = None
    data: list[bytes] = []
    for line in [*lines, b""]:  # end of stream dispatches what is pending, like `flush`
        if not line:
            if data:
                messages.append(SSEMessage(event or None, b"\n".join(data)))
            event, data = None, []
            continue
        name, colon, value = line.partition(b":")
        if not name and colon:
            continue
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    return messages


sse_lines = st.sampled_from(
    [b"event: a", b"event: response.output_text.delta", b"event:", b"event: ", b"data: {}", b"data:x",
     b"data", b"data: ", b": comment", b"id: 1", b"retry: 5", b"foo: bar", b"", b"", b""]
)  # fmt: skip


@given(
    lines=st.lists(sse_lines, max_size=20),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=12),
)
def test_decoder_matches_the_plain_algorithm_on_any_lines_and_chunking(
    lines: list[bytes], eol: bytes, bom: bool, cuts: list[int]
) -> None:
    stream = (b"\xef\xbb\xbf" if bom else b"") + b"".join(line + eol for line in lines)
    assert decode_all(split_at(stream, cuts)) == reference_decode(stream)


def test_runs_of_blank_lines_across_chunks_dispatch_once_and_keep_the_next_event_name() -> None:
    assert decode_all([b"data: a\n\n\n", b"\nevent: e\ndata: b\n", b"\n"]) == [
        SSEMessage(None, b"a"),
        SSEMessage("e", b"b"),
    ]


def test_flush_keeps_the_event_name_of_an_unterminated_event() -> None:
    assert decode_all([b"event: e\ndata: x\n"]) == [SSEMessage("e", b"x")]


def test_encode_events_is_each_event_encoded_back_to_back() -> None:
    events = [
        {"type": "response.created", "response": {"id": "resp_1", "text": "a\nb"}, "sequence_number": 0},
        {"type": "response.output_text.delta", "delta": "line\r\nbreak", "sequence_number": 1},
        {"type": "response.created", "response": {}, "sequence_number": 2},
    ]
    assert encode_events(events) == b"".join(encode_event(event) for event in events)
    assert encode_events([]) == b""
