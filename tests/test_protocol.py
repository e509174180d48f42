"""The wire contract: round trips, golden frames that keep old peers working, the frame cap."""

from __future__ import annotations

import socket
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tuned_client import protocol as p
from tuned_client.framing import (
    HEADER,
    FrameError,
    decode_message,
    decode_request,
    encode_frame,
    read_frame,
)

# Frames as version 1 of the protocol encodes them. If one of these changes, an
# old client or daemon would misread the new one: add a field with a default
# instead, or bump PROTOCOL_VERSION on purpose.
GOLDEN = {
    "hello": "0000002d84a26f70a568656c6c6fa870726f746f636f6c01a6636c69656e74ac74756e65645f636c69656e74a37069642a",
    "subscribe": "0000002983a26f70a9737562736372696265ad6578706572696d656e745f6964a56162313263a573696e636507",
    "report": "0000002783a26f70a67265706f7274a373657103a76d65747269637381a46c6f7373cb3fe0000000000000",
    "welcome": "0000003284a46b696e64a777656c636f6d65a870726f746f636f6c01ae6461656d6f6e5f76657273696f6ea5302e312e30a370696407",
    "error": "0000003583a46b696e64a56572726f72a4636f6465a96e6f745f666f756e64a76d657373616765b16e6f206578706572696d656e7420277827",
    "trial_finished": "0000006186a46b696e64ae747269616c5f66696e6973686564a373657109a27473cb3ff8000000000000ad6578706572696d656e745f6964a56162313263a8747269616c5f6964ab61623132635f3030303030a6737461747573aa5445524d494e41544544",
}  # fmt: skip

MESSAGES: dict[str, Any] = {
    "hello": p.Hello(protocol=1, client="tuned_client", pid=42),
    "subscribe": p.Subscribe(experiment_id="ab12c", since=7),
    "report": p.Report(seq=3, metrics=p.pack_user({"loss": 0.5})),
    "welcome": p.Welcome(protocol=1, daemon_version="0.1.0", pid=7),
    "error": p.Error(code="not_found", message="no experiment 'x'"),
    "trial_finished": p.TrialFinished(
        seq=9, ts=1.5, experiment_id="ab12c", trial_id="ab12c_00000", status="TERMINATED"
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_frames_encode_byte_for_byte(name: str) -> None:
    assert encode_frame(MESSAGES[name]).hex() == GOLDEN[name]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_frames_still_decode(name: str) -> None:
    body = bytes.fromhex(GOLDEN[name])[HEADER.size :]
    decoded = decode_request(body) if name in ("hello", "subscribe", "report") else None
    if decoded is None:
        decoded = decode_message(body)
    assert type(decoded) is type(MESSAGES[name])
    assert msgspec.structs.asdict(decoded) == msgspec.structs.asdict(MESSAGES[name])


def test_a_newer_peer_adding_a_field_is_still_understood() -> None:
    body = msgspec.msgpack.encode(
        {"op": "hello", "protocol": 1, "client": "x", "pid": 1, "field_from_the_future": [1]}
    )
    assert decode_request(body) == p.Hello(protocol=1, client="x", pid=1)


def test_an_ill_typed_request_names_the_bad_field() -> None:
    body = msgspec.msgpack.encode({"op": "subscribe", "since": "yesterday"})
    with pytest.raises(msgspec.ValidationError, match="since"):
        decode_request(body)


user_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(user_values)
def test_user_values_round_trip(value: Any) -> None:
    assert p.unpack_user(p.pack_user(value)) == value


class Opaque:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque)

    def __repr__(self) -> str:
        return "Opaque()"


def test_objects_msgpack_cannot_carry_travel_pickled_and_stay_opaque_to_the_daemon() -> None:
    raw = p.pack_user({"other_data": ..., "obj": Opaque(), "n": 1})
    assert p.unpack_user(raw) == {"other_data": ..., "obj": Opaque(), "n": 1}
    seen_by_daemon = p.unpack_opaque(raw)
    assert repr(seen_by_daemon["other_data"]) == "Ellipsis"
    assert isinstance(seen_by_daemon["obj"], p.PickledValue)
    # The daemon re-encodes what it received without understanding it.
    assert p.unpack_user(p.pack_opaque(seen_by_daemon))["obj"] == Opaque()
    assert msgspec.json.encode(seen_by_daemon, enc_hook=p.json_default) == (
        b'{"other_data":"Ellipsis","obj":"Opaque()","n":1}'
    )


def test_a_frame_above_the_cap_is_refused_before_its_body_is_read() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(HEADER.pack(2**31))  # announces 2 GiB, sends nothing more
        with pytest.raises(FrameError, match="exceeds"):
            read_frame(right, limit=1024)
