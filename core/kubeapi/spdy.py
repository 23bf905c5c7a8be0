"""SPDY/3.1 framing: the frames ``kubectl port-forward`` speaks, their header compression and
their flow-control windows.

Why this exists: kubectl forwards ports over SPDY/3.1 (inside binary WebSocket messages since
1.31, ``SPDY/3.1+portforward.k8s.io``; as a plain ``Upgrade: SPDY/3.1`` before that), and no
maintained Python library speaks it. Only the framing layer is needed (kube uses SPDY streams as
pipes, never its HTTP layer), so this module holds that layer as pure logic, without I/O: bytes
in, frames out (:class:`FrameDecoder`), frames in, bytes out (:class:`FrameEncoder`), and the
window arithmetic (:class:`FlowWindows`). ``handlers.apiserver.spdysession`` does the I/O.

What the SPDY/3 draft (draft-mbelshe-httpbis-spdy-00) and its 3.1 amendment fix, and how this
module follows them:

* **Frames** start with 8 bytes. A control frame: the control bit, the version (3) and the
  type; flags and a 24-bit length. A data frame: a 31-bit stream id; flags (``FIN``) and the
  length. The control frames served: SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY,
  HEADERS, WINDOW_UPDATE; any other type (CREDENTIAL, unknown ones) is skipped, as the draft
  says a receiver must.
* **Header blocks** (in SYN_STREAM, SYN_REPLY, HEADERS) are a count and length-prefixed
  name/value pairs, compressed with zlib using the draft's dictionary (:data:`DICTIONARY`). Each
  direction of a connection is *one* zlib stream for the connection's life: every block is a
  sync-flushed piece of it, so a block can only be read by a decoder that read every block
  before it. A block that does not inflate is therefore a connection error; a block that
  inflates but is malformed (duplicate or upper-case names, lengths beyond the block) is a
  stream error (RST_STREAM with PROTOCOL_ERROR) and the connection goes on.
* **Errors** come in two sizes. :class:`SessionError` (raised): the connection cannot go on;
  its owner sends GOAWAY with the status and closes. :class:`StreamError` (returned among the
  frames, in order): one stream is refused with RST_STREAM; the rest goes on.
* **Flow control** (3.1): every stream, and the session as a whole (stream 0), has a window of
  64 KiB that data consumes and WINDOW_UPDATE replenishes. See :class:`FlowWindows` for how this
  side keeps it towards a peer that keeps none (kube's own SPDY library does not).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

VERSION = 3

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_CLEAR_SETTINGS = 0x01

# RST_STREAM status codes.
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
UNSUPPORTED_VERSION = 4
CANCEL = 5
INTERNAL_ERROR = 6
FLOW_CONTROL_ERROR = 7
STREAM_IN_USE = 8
STREAM_ALREADY_CLOSED = 9
FRAME_TOO_LARGE = 11

# GOAWAY status codes.
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

SETTINGS_INITIAL_WINDOW_SIZE = 7

DEFAULT_WINDOW = 64 * 1024
"""Every stream's and the session's window until a SETTINGS frame or WINDOW_UPDATE says more."""
MAX_WINDOW = 2**31 - 1
MAX_FRAME = 1024 * 1024
"""The longest frame accepted (the format allows 16 MiB; kube's writers send 32 KiB)."""
MAX_HEADER_BYTES = 256 * 1024
"""The most a header block may inflate to (a small compressed block can inflate hugely)."""
MAX_STREAM_ID = 2**31 - 1

_HEADER = struct.Struct(">II")

# The zlib dictionary of SPDY/3 (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1): the common
# header names and values, each as a header block would spell it (a 4-byte length, then the
# word), followed by a run of common text. Both ends must use exactly these 1423 bytes: zlib
# checks the dictionary's Adler-32 (pinned by a unit test) before it inflates anything.
_DICTIONARY_WORDS = (
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
)
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = (
    b"".join(len(word).to_bytes(4, "big") + word.encode() for word in _DICTIONARY_WORDS)
    + _DICTIONARY_TAIL.encode()
)


class SessionError(Exception):
    """The connection cannot go on: answer with GOAWAY carrying ``status``, then close."""

    def __init__(self, message: str, *, status: int = GOAWAY_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class StreamError:
    """One stream's frame was refused: answer with RST_STREAM ``status`` on ``stream_id``."""

    stream_id: int
    status: int
    message: str


# -- frames --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Data:
    stream_id: int
    data: bytes = b""
    fin: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SynStream:
    stream_id: int
    headers: Mapping[str, str] = field(default_factory=dict)
    associated_to: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SynReply:
    stream_id: int
    headers: Mapping[str, str] = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    values: Mapping[int, int] = field(default_factory=dict)
    """Setting id -> value (the per-entry persistence flags are not kept: nothing persists)."""
    clear: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    ping_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True, slots=True, kw_only=True)
class Headers:
    stream_id: int
    headers: Mapping[str, str] = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowUpdate:
    stream_id: int
    """0: the session's window (SPDY/3.1); otherwise one stream's."""
    delta: int


Frame = Data | SynStream | SynReply | RstStream | Settings | Ping | GoAway | Headers | WindowUpdate


# -- header blocks -------------------------------------------------------------------------


def pack_headers(headers: Mapping[str, str]) -> bytes:
    """A name/value block before compression (names lower-cased, as the draft requires)."""
    parts = [len(headers).to_bytes(4, "big")]
    for name, value in headers.items():
        raw_name, raw_value = name.lower().encode(), value.encode()
        parts += [len(raw_name).to_bytes(4, "big"), raw_name,
                  len(raw_value).to_bytes(4, "big"), raw_value]  # fmt: skip
    return b"".join(parts)


def unpack_headers(block: bytes) -> dict[str, str]:
    """A name/value block after decompression; ``ValueError`` says what is wrong with it."""
    if len(block) < 4:
        raise ValueError("the header block is shorter than its count")
    count, offset = int.from_bytes(block[:4], "big"), 4
    headers: dict[str, str] = {}
    for _ in range(count):
        name, offset = _string(block, offset, "name")
        value, offset = _string(block, offset, "value")
        if not name:
            raise ValueError("a header name is empty")
        if name != name.lower():
            raise ValueError(f"header name {name[:40]!r} is not lower case")
        if name in headers:
            raise ValueError(f"header {name[:40]!r} appears twice")
        headers[name] = value
    if offset != len(block):
        raise ValueError("the header block has bytes after its last pair")
    return headers


def _string(block: bytes, offset: int, what: str) -> tuple[str, int]:
    if offset + 4 > len(block):
        raise ValueError(f"a header {what}'s length runs past the block")
    size = int.from_bytes(block[offset : offset + 4], "big")
    start, end = offset + 4, offset + 4 + size
    if end > len(block):
        raise ValueError(f"a header {what} runs past the block")
    try:
        return block[start:end].decode(), end
    except UnicodeDecodeError:
        raise ValueError(f"a header {what} is not UTF-8") from None


# -- encoding ------------------------------------------------------------------------------


def _control(kind: int, flags: int, body: bytes) -> bytes:
    if len(body) >= 1 << 24:
        raise ValueError("a frame's body does not fit its 24-bit length")
    return _HEADER.pack(0x80000000 | VERSION << 16 | kind, flags << 24 | len(body)) + body


def _stream_id(value: int) -> bytes:
    if not 0 <= value <= MAX_STREAM_ID:
        raise ValueError(f"stream id {value} is not 31 bits")
    return value.to_bytes(4, "big")


class FrameEncoder:
    """Frames to bytes for one direction of one connection (its header compression context
    lives as long as the connection: every frame of that direction must pass through here, in
    the order it is sent)."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8,
                                      zlib.Z_DEFAULT_STRATEGY, DICTIONARY)  # fmt: skip

    def _block(self, headers: Mapping[str, str]) -> bytes:
        return self._zlib.compress(pack_headers(headers)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case Data(stream_id=sid, data=data, fin=fin):
                if not 0 < sid <= MAX_STREAM_ID:
                    raise ValueError(f"data frame on stream {sid}")
                if len(data) >= 1 << 24:
                    raise ValueError("a data frame does not fit its 24-bit length")
                return _HEADER.pack(sid, (FLAG_FIN if fin else 0) << 24 | len(data)) + data
            case SynStream():
                flags = (FLAG_FIN if frame.fin else 0) | (
                    FLAG_UNIDIRECTIONAL if frame.unidirectional else 0
                )
                body = (_stream_id(frame.stream_id) + _stream_id(frame.associated_to)
                        + bytes(((frame.priority & 7) << 5, frame.slot & 0xFF))
                        + self._block(frame.headers))  # fmt: skip
                return _control(SYN_STREAM, flags, body)
            case SynReply(stream_id=sid, headers=headers, fin=fin):
                return _control(SYN_REPLY, FLAG_FIN if fin else 0,
                                _stream_id(sid) + self._block(headers))  # fmt: skip
            case Headers(stream_id=sid, headers=headers, fin=fin):
                return _control(HEADERS, FLAG_FIN if fin else 0,
                                _stream_id(sid) + self._block(headers))  # fmt: skip
            case RstStream(stream_id=sid, status=status):
                return _control(RST_STREAM, 0, _stream_id(sid) + status.to_bytes(4, "big"))
            case Settings(values=values, clear=clear):
                body = len(values).to_bytes(4, "big") + b"".join(
                    (key & 0xFFFFFF).to_bytes(4, "big") + value.to_bytes(4, "big")
                    for key, value in values.items()
                )
                return _control(SETTINGS, FLAG_CLEAR_SETTINGS if clear else 0, body)
            case Ping(ping_id=ping_id):
                return _control(PING, 0, ping_id.to_bytes(4, "big"))
            case GoAway(last_good_stream_id=last, status=status):
                return _control(GOAWAY, 0, _stream_id(last) + status.to_bytes(4, "big"))
            case WindowUpdate(stream_id=sid, delta=delta):
                if not 0 < delta <= MAX_WINDOW:
                    raise ValueError(f"window delta {delta} is not between 1 and 2^31-1")
                return _control(WINDOW_UPDATE, 0, _stream_id(sid) + delta.to_bytes(4, "big"))
        raise TypeError(f"not a SPDY frame: {frame!r}")


# -- decoding ------------------------------------------------------------------------------

_FIXED_LENGTH = {RST_STREAM: 8, PING: 4, GOAWAY: 8, WINDOW_UPDATE: 8}
_MIN_LENGTH = {SYN_STREAM: 10, SYN_REPLY: 4, HEADERS: 4, SETTINGS: 4}


class FrameDecoder:
    """Bytes to frames for one direction of one connection: feed what arrives (in any pieces),
    take the complete frames. :class:`SessionError` when the connection cannot go on."""

    def __init__(
        self, *, max_frame: int = MAX_FRAME, max_header_bytes: int = MAX_HEADER_BYTES
    ) -> None:
        self._buffer = bytearray()
        self._zlib = zlib.decompressobj(zdict=DICTIONARY)
        self.max_frame = max_frame
        self.max_header_bytes = max_header_bytes
        self._broken: SessionError | None = None

    def feed(self, data: bytes) -> list[Frame | StreamError]:
        """Every frame completed by ``data``, in order, with refused ones as StreamErrors."""
        if self._broken is not None:
            raise self._broken
        self._buffer += data
        out: list[Frame | StreamError] = []
        try:
            while len(self._buffer) >= 8:
                first, second = _HEADER.unpack_from(self._buffer)
                flags, length = second >> 24, second & 0xFFFFFF
                if length > self.max_frame:
                    raise SessionError(
                        f"a frame of {length} bytes is longer than this server's "
                        f"{self.max_frame}-byte limit"
                    )
                if len(self._buffer) < 8 + length:
                    break
                body = bytes(self._buffer[8 : 8 + length])
                del self._buffer[: 8 + length]
                if first & 0x80000000:
                    item = self._control(first, flags, body)
                    if item is not None:
                        out.append(item)
                else:
                    if first == 0:
                        raise SessionError("a data frame on stream 0")
                    out.append(Data(stream_id=first, data=body, fin=bool(flags & FLAG_FIN)))
        except SessionError as exc:
            self._broken = exc
            raise
        return out

    def _control(self, first: int, flags: int, body: bytes) -> Frame | StreamError | None:
        version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise SessionError(f"SPDY version {version} is not served (only {VERSION})")
        fixed = _FIXED_LENGTH.get(kind)
        if fixed is not None and len(body) != fixed:
            raise SessionError(f"a control frame of type {kind} must be {fixed} bytes long")
        if len(body) < _MIN_LENGTH.get(kind, 0):
            raise SessionError(f"a control frame of type {kind} is too short")
        fin = bool(flags & FLAG_FIN)
        if kind == SYN_STREAM:
            sid = _id31(body, 0)
            block = self._inflate(body[10:])
            if sid == 0:
                raise SessionError("SYN_STREAM on stream 0")
            try:
                headers = unpack_headers(block)
            except ValueError as exc:
                return StreamError(sid, PROTOCOL_ERROR, str(exc))
            return SynStream(stream_id=sid, headers=headers, associated_to=_id31(body, 4),
                             priority=body[8] >> 5, slot=body[9], fin=fin,
                             unidirectional=bool(flags & FLAG_UNIDIRECTIONAL))  # fmt: skip
        if kind in (SYN_REPLY, HEADERS):
            sid = _id31(body, 0)
            block = self._inflate(body[4:])
            try:
                headers = unpack_headers(block)
            except ValueError as exc:
                return StreamError(sid, PROTOCOL_ERROR, str(exc))
            if kind == SYN_REPLY:
                return SynReply(stream_id=sid, headers=headers, fin=fin)
            return Headers(stream_id=sid, headers=headers, fin=fin)
        if kind == RST_STREAM:
            return RstStream(stream_id=_id31(body, 0), status=int.from_bytes(body[4:8], "big"))
        if kind == SETTINGS:
            count = int.from_bytes(body[:4], "big")
            if len(body) != 4 + 8 * count:
                raise SessionError(f"a SETTINGS frame of {count} entries has the wrong length")
            values = {
                int.from_bytes(body[5 + 8 * i : 8 + 8 * i], "big"): int.from_bytes(
                    body[8 + 8 * i : 12 + 8 * i], "big"
                )
                for i in range(count)
            }
            return Settings(values=values, clear=bool(flags & FLAG_CLEAR_SETTINGS))
        if kind == PING:
            return Ping(ping_id=int.from_bytes(body, "big"))
        if kind == GOAWAY:
            return GoAway(last_good_stream_id=_id31(body, 0),
                          status=int.from_bytes(body[4:8], "big"))  # fmt: skip
        if kind == WINDOW_UPDATE:
            sid, delta = _id31(body, 0), _id31(body, 4)
            if delta == 0:
                if sid == 0:
                    raise SessionError("a session WINDOW_UPDATE of 0")
                return StreamError(sid, PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            return WindowUpdate(stream_id=sid, delta=delta)
        return None  # CREDENTIAL and unknown types: the draft says to ignore them

    def _inflate(self, block: bytes) -> bytes:
        try:
            out = self._zlib.decompress(block, self.max_header_bytes + 1)
        except zlib.error as exc:
            raise SessionError(f"a header block does not inflate: {exc}") from None
        if len(out) > self.max_header_bytes or self._zlib.unconsumed_tail:
            raise SessionError(
                f"a header block inflates beyond this server's {self.max_header_bytes}-byte limit"
            )
        return out


def _id31(body: bytes, offset: int) -> int:
    return int.from_bytes(body[offset : offset + 4], "big") & 0x7FFFFFFF


# -- flow control --------------------------------------------------------------------------


@dataclass(slots=True)
class _Window:
    receive: int
    send: int
    consumed: int = 0
    """Bytes the consumer took since the last WINDOW_UPDATE this side sent."""


class FlowWindows:
    """The windows of one connection, this side's view (SPDY/3.1 section 2.6.8 and 3.1's
    session window).

    Receiving: every data byte the peer sends takes from its stream's window and the session's;
    :meth:`consumed` gives back the WINDOW_UPDATEs to send as the *consumer* takes the data
    (one per half window, so a slow consumer holds a window-keeping peer back). A peer that
    sends beyond its windows is :meth:`overrun`: kube's own SPDY library (spdystream, in
    kubectl and the kubelet) keeps no windows at all, so the owner answers an overrun by
    reading no further until the consumer catches up, rather than with FLOW_CONTROL_ERROR.

    Sending: the peer's windows, as its SETTINGS (initial window) and WINDOW_UPDATEs say; they
    are held to only once the peer has shown it keeps them (sent either). A peer that never does
    (spdystream again) never replenishes them, so holding to its 64 KiB would stall every
    stream for good after its first 64 KiB.
    """

    def __init__(self, *, initial_window: int = DEFAULT_WINDOW) -> None:
        self.initial_receive = initial_window
        self.initial_send = DEFAULT_WINDOW
        self.peer_keeps_windows = False
        self._session = _Window(initial_window, DEFAULT_WINDOW)
        self._streams: dict[int, _Window] = {}

    def open(self, stream_id: int) -> None:
        self._streams.setdefault(stream_id, _Window(self.initial_receive, self.initial_send))

    def close(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    # receiving

    def received(self, stream_id: int, size: int) -> None:
        self._session.receive -= size
        window = self._streams.get(stream_id)
        if window is not None:
            window.receive -= size

    def overrun(self, stream_id: int) -> bool:
        """The peer has sent more on this stream (or the session) than it was granted."""
        window = self._streams.get(stream_id)
        return self._session.receive < 0 or (window is not None and window.receive < 0)

    def consumed(self, stream_id: int, size: int) -> list[WindowUpdate]:
        """The consumer took ``size`` bytes of ``stream_id``: the WINDOW_UPDATEs now due."""
        updates: list[WindowUpdate] = []
        window = self._streams.get(stream_id)
        if window is not None:
            window.consumed += size
            if window.consumed >= self.initial_receive // 2:
                updates.append(WindowUpdate(stream_id=stream_id, delta=window.consumed))
                window.receive += window.consumed
                window.consumed = 0
        self._session.consumed += size
        if self._session.consumed >= self.initial_receive // 2:
            updates.append(WindowUpdate(stream_id=0, delta=self._session.consumed))
            self._session.receive += self._session.consumed
            self._session.consumed = 0
        return updates

    # sending

    def sendable(self, stream_id: int) -> int:
        """How many bytes may go on ``stream_id`` now (0: wait for a WINDOW_UPDATE)."""
        if not self.peer_keeps_windows:
            return MAX_WINDOW
        window = self._streams.get(stream_id)
        if window is None:
            return 0
        return max(0, min(window.send, self._session.send))

    def sent(self, stream_id: int, size: int) -> None:
        self._session.send -= size
        window = self._streams.get(stream_id)
        if window is not None:
            window.send -= size

    def window_update(self, frame: WindowUpdate) -> StreamError | None:
        """Apply the peer's WINDOW_UPDATE; a StreamError if it overflows the stream's window
        (the session's overflowing is a :class:`SessionError`)."""
        self.peer_keeps_windows = True
        if frame.stream_id == 0:
            if self._session.send + frame.delta > MAX_WINDOW:
                raise SessionError("the session's send window overflows 2^31-1")
            self._session.send += frame.delta
            return None
        window = self._streams.get(frame.stream_id)
        if window is None:
            return None  # a stream that has ended: nothing to send on any more
        if window.send + frame.delta > MAX_WINDOW:
            return StreamError(frame.stream_id, FLOW_CONTROL_ERROR,
                               "the stream's send window overflows 2^31-1")  # fmt: skip
        window.send += frame.delta
        return None

    def settings(self, frame: Settings) -> None:
        """Apply the peer's SETTINGS_INITIAL_WINDOW_SIZE: to new streams, and by its change to
        every open stream's send window (which may go below zero: wait for updates)."""
        value = frame.values.get(SETTINGS_INITIAL_WINDOW_SIZE)
        if value is None:
            return
        if value > MAX_WINDOW:
            raise SessionError("SETTINGS_INITIAL_WINDOW_SIZE is beyond 2^31-1")
        self.peer_keeps_windows = True
        change, self.initial_send = value - self.initial_send, value
        for window in self._streams.values():
            window.send += change
