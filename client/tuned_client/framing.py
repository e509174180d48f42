"""Length-prefixed msgpack frames over a blocking socket (the client side).

A frame is a 4-byte big-endian unsigned length followed by that many bytes of
msgpack. The length is checked against the cap before the body is read, so a
hostile or corrupt peer cannot make us allocate gigabytes. The daemon's async
reader (``tuned.serve.wire``) shares ``HEADER``, ``encode_frame`` and ``check_length``.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgspec

from .protocol import MAX_FRAME_BYTES, Message, Request

HEADER = struct.Struct(">I")

_encoder = msgspec.msgpack.Encoder()
_message_decoder = msgspec.msgpack.Decoder(Message)
_request_decoder = msgspec.msgpack.Decoder(Request)


class FrameError(Exception):
    """The peer sent something that is not a valid frame; the connection is unusable."""


class ConnectionClosed(FrameError):
    """The peer closed the connection."""


def encode_frame(message: Any) -> bytes:
    """One frame: the length prefix and the msgpack body."""
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def check_length(length: int, limit: int = MAX_FRAME_BYTES) -> None:
    if length > limit:
        raise FrameError(f"frame of {length} bytes exceeds the {limit}-byte limit")


def decode_message(body: bytes | memoryview) -> Message:
    """Decode a daemon-to-client frame body."""
    try:
        message: Message = _message_decoder.decode(body)
        return message
    except msgspec.DecodeError as exc:
        raise FrameError(f"undecodable message from the daemon: {exc}") from exc


def decode_request(body: bytes | memoryview) -> Request:
    """Decode a client-to-daemon frame body; msgspec's error names the bad field."""
    request: Request = _request_decoder.decode(body)
    return request


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionClosed("the daemon closed the connection")
        got += k
    return bytes(buf)


def read_frame(sock: socket.socket, limit: int = MAX_FRAME_BYTES) -> bytes:
    (length,) = HEADER.unpack(_recv_exact(sock, HEADER.size))
    check_length(length, limit)
    return _recv_exact(sock, length)


def send_message(sock: socket.socket, message: Any) -> None:
    sock.sendall(encode_frame(message))


def recv_message(sock: socket.socket) -> Message:
    return decode_message(read_frame(sock))
