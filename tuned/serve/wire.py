"""Frames on the daemon side: async reads with the size cap checked before the body."""

from __future__ import annotations

from anyio.abc import ByteStream
from tuned_client.framing import HEADER, FrameError, check_length, decode_request, encode_frame
from tuned_client.protocol import Request

__all__ = ["FrameError", "FrameReader", "decode_request", "encode_frame"]


class FrameReader:
    """Buffers a byte stream and yields whole frame bodies."""

    def __init__(self, stream: ByteStream, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as a frame."""
        return len(self._buf)

    async def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            try:
                chunk = await self._stream.receive(max(65536, n - len(self._buf)))
            except Exception:  # EndOfStream, BrokenResource, ClosedResource
                return False
            self._buf += chunk
        return True

    async def read_body(self) -> bytes | None:
        """The next frame's body, or None at a clean end of stream."""
        if not await self._fill(HEADER.size):
            if self._buf:
                raise FrameError("connection closed in the middle of a frame header")
            return None
        (length,) = HEADER.unpack_from(self._buf)
        check_length(length, self._limit)
        if not await self._fill(HEADER.size + length):
            raise FrameError("connection closed in the middle of a frame")
        body = bytes(self._buf[HEADER.size : HEADER.size + length])
        del self._buf[: HEADER.size + length]
        return body

    async def read_request(self) -> Request | None:
        body = await self.read_body()
        return None if body is None else decode_request(body)
