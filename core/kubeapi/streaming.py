"""The streaming subresources' rules: channel framing, exec results, log and exec options.

Why this exists: ``pods/log``, ``pods/exec`` and ``pods/portforward`` each carry a small protocol
of Kubernetes' that is pure logic: which query parameters mean what (with kube's messages when
they are wrong), which container a request names, how a WebSocket message names its channel
(the first byte: stdin 0, stdout 1, stderr 2, error 3, resize 4; ``v5.channel.k8s.io`` adds
255, "close channel N"), and what the error channel says when a command ends (a
``metav1.Status``: Success, or ``NonZeroExitCode`` with an ``ExitCode`` cause). The handlers in
``handlers.apiserver.subresources`` do the I/O; the WebSocket frames themselves are aiohttp's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.kubeapi.status import APIError, bad_request
from core.pods.status import MESH_SIDECAR

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
"""The remote-command protocols served, most preferred first (kubectl ≥1.30 offers v5)."""
PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io")
"""The kubelet's WebSocket port-forward protocol: a data and an error channel per port."""
SPDY_EXEC_PROTOCOLS = ("v4.channel.k8s.io",)
"""The remote-command protocol served over a plain SPDY upgrade (one SPDY stream per channel)."""
PORTFORWARD_PROTOCOL_V1 = "portforward.k8s.io"
"""The kubelet's SPDY port-forward protocol (streams paired by ``requestID``)."""
SPDY_PORTFORWARD_PROTOCOL = "SPDY/3.1+" + PORTFORWARD_PROTOCOL_V1
"""kubectl's port-forward: the kubelet's SPDY protocol tunnelled in binary WebSocket messages."""
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255
"""``v5.channel.k8s.io``: a message ``[255, N]`` closes channel N (stdin's end of input)."""


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """One WebSocket message of a channel protocol: data on ``channel``, or its close."""

    channel: int
    data: bytes = b""
    close: bool = False


def encode(channel: int, data: bytes) -> bytes:
    """The binary message carrying ``data`` on ``channel``."""
    if not 0 <= channel <= 255:
        raise ValueError(f"channel {channel} is not a byte")
    return bytes((channel,)) + data


def decode(message: bytes, *, protocol: str) -> ChannelMessage:
    """What a binary message says; ``ValueError`` for an empty one or a malformed close."""
    if not message:
        raise ValueError("an empty message names no channel")
    channel = message[0]
    if channel == CLOSE and protocol == "v5.channel.k8s.io":
        if len(message) != 2:
            raise ValueError("a close message names exactly one channel")
        return ChannelMessage(message[1], close=True)
    return ChannelMessage(channel, message[1:])


def exec_result(exit_code: int | None, *, command: Sequence[str], error: str = "") -> bytes:
    """The error channel's message when a command has ended (the kubelet's wording)."""
    import json

    status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}}
    if error:
        status |= {"status": "Failure", "reason": "InternalError", "message": error}
    elif exit_code == 0:
        status |= {"status": "Success"}
    else:
        code = -1 if exit_code is None else exit_code
        status |= {
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "message": "command terminated with non-zero exit code: error executing command "
            f"{list(command)}, exit code {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    return json.dumps(status, separators=(",", ":")).encode()


def port_preamble(channel: int, port: int) -> bytes:
    """The first message of each port-forward channel: the port, two bytes little-endian."""
    return encode(channel, port.to_bytes(2, "little"))


# -- options -------------------------------------------------------------------------------


def _flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "")
    if value in ("", "false", "0", "False"):
        return False
    if value in ("true", "1", "True"):
        return True
    raise bad_request(f'invalid value for {name}: "{value[:32]}" is not a boolean')


def _integer(query: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f'{name}: Invalid value: "{text[:32]}": must be an integer') from None
    if value < minimum:
        relation = "greater than 0" if minimum == 1 else f"greater than or equal to {minimum}"
        raise bad_request(f"{name}: Invalid value: {value}: must be {relation}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class LogOptions:
    """``PodLogOptions`` from a request's query."""

    container: str = ""
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since_ns: int | None = None
    """Only output shipped at or after this time (from ``sinceSeconds`` or ``sinceTime``)."""
    limit_bytes: int | None = None


def log_options(query: Mapping[str, str], *, now_ns: int) -> LogOptions:
    """The options of a ``pods/log`` request; kube's BadRequest when one is malformed."""
    since_seconds = _integer(query, "sinceSeconds", minimum=1)
    since_time = query.get("sinceTime") or None
    if since_seconds is not None and since_time is not None:
        raise bad_request("at most one of `sinceTime` or `sinceSeconds` may be specified")
    since_ns: int | None = None
    if since_seconds is not None:
        since_ns = now_ns - since_seconds * 1_000_000_000
    elif since_time is not None:
        since_ns = parse_time_ns(since_time)
    return LogOptions(
        container=query.get("container", ""),
        follow=_flag(query, "follow"),
        previous=_flag(query, "previous"),
        timestamps=_flag(query, "timestamps"),
        tail_lines=_integer(query, "tailLines", minimum=0),
        since_ns=since_ns,
        limit_bytes=_integer(query, "limitBytes", minimum=1),
    )


def parse_time_ns(text: str) -> int:
    """An RFC 3339 time (``sinceTime``) in ns since the epoch."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(
            f'sinceTime: Invalid value: "{text[:40]}": not an RFC 3339 time'
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def timestamp(at_ns: int) -> str:
    """RFC 3339 with nanoseconds, as the kubelet prefixes a line with ``timestamps=true``."""
    seconds, nanos = divmod(at_ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecOptions:
    """``PodExecOptions`` from a request's query (``command`` may repeat)."""

    command: tuple[str, ...]
    container: str = ""
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False


def exec_options(query: Mapping[str, str], command: Sequence[str]) -> ExecOptions:
    """The options of a ``pods/exec`` request (``command``: every ``command`` parameter)."""
    if not command:
        raise bad_request("you must specify at least one command for the container")
    options = ExecOptions(
        command=tuple(command),
        container=query.get("container", ""),
        stdin=_flag(query, "stdin"),
        stdout=_flag(query, "stdout"),
        stderr=_flag(query, "stderr"),
        tty=_flag(query, "tty"),
    )
    if not (options.stdin or options.stdout or options.stderr):
        raise bad_request("you must specify at least one of stdin, stdout, stderr")
    if options.tty and options.stderr:
        raise bad_request("stderr cannot be requested with a tty")
    return options


def forwarded_ports(values: Sequence[str]) -> list[int]:
    """The ``ports`` of a port-forward request (each may be a comma-separated list)."""
    ports: list[int] = []
    for value in values:
        for text in value.split(","):
            text = text.strip()
            if not text.isdigit() or not 0 < int(text) < 65536:
                raise bad_request(f'invalid port "{text[:16]}": must be between 1 and 65535')
            ports.append(int(text))
    if not ports:
        raise bad_request('query parameter "port" is required')
    return ports


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardRequest:
    """What one SPDY port-forward stream is: half (``error`` or data) of request ``request_id``
    to the pod's ``port``."""

    request_id: str
    port: int
    error_stream: bool


def spdy_forward_request(headers: Mapping[str, str], *, stream_id: int) -> ForwardRequest:
    """A port-forward stream's headers (lower-case names, as SPDY carries them) read as the
    kubelet reads them; ``ValueError`` with its message when the stream must be refused."""
    port_text = headers.get("port", "")
    if not port_text:
        raise ValueError('"port" header is required')
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f'unable to parse "{port_text[:16]}" as a port')
    port = int(port_text)
    if port < 1:
        raise ValueError(f'port "{port_text[:16]}" must be > 0')
    kind = headers.get("streamtype", "")
    if not kind:
        raise ValueError('"streamType" header is required')
    if kind not in ("error", "data"):
        raise ValueError(f'invalid stream type "{kind[:16]}"')
    request_id = headers.get("requestid", "")
    if not request_id:
        # Clients older than the header open a connection's error stream, then its data
        # stream, as consecutive odd ids: pair them as the kubelet does (by the error's id).
        request_id = str(stream_id if kind == "error" else stream_id - 2)
    return ForwardRequest(request_id=request_id, port=port, error_stream=kind == "error")


def exec_stream_kinds(*, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> frozenset[str]:
    """The SPDY streams (``streamType``) an exec request waits for: always ``error``; each
    channel it asked for; ``resize`` with a terminal (and no ``stderr``: a terminal has none)."""
    kinds = {"error"}
    kinds |= {name for name, wanted in (("stdin", stdin), ("stdout", stdout)) if wanted}
    if tty:
        kinds.add("resize")
    elif stderr:
        kinds.add("stderr")
    return frozenset(kinds)


MAX_RESIZE_BYTES = 4096


def resize_messages(buffered: bytes) -> tuple[list[bytes], bytes]:
    """The complete terminal sizes in a SPDY resize stream's bytes (one JSON object after
    another, as kubectl's encoder writes them), each as the resize channel's message; and the
    incomplete rest, to be completed by the next bytes."""
    import json

    decoder = json.JSONDecoder()
    text = buffered.decode(errors="replace")
    messages: list[bytes] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return messages, b""
        try:
            value, position = decoder.raw_decode(text, position)
        except ValueError:
            rest = text[position:].encode()
            # A size is a few dozen bytes: a longer unfinished one is garbage, dropped.
            return messages, rest if len(rest) <= MAX_RESIZE_BYTES else b""
        if isinstance(value, dict):
            messages.append(json.dumps(value, separators=(",", ":")).encode())


def terminal_size(message: bytes) -> tuple[int, int]:
    """A resize channel message (``{"Width": w, "Height": h}``) as (columns, rows);
    ``ValueError`` when it is not one."""
    import json

    try:
        size = json.loads(message)
    except ValueError:
        raise ValueError("a resize message is not JSON") from None
    if not isinstance(size, dict):
        raise ValueError("a resize message is not an object")
    width, height = size.get("Width", 0), size.get("Height", 0)
    if not all(isinstance(v, int) and 0 <= v <= 0xFFFF for v in (width, height)):
        raise ValueError("a terminal's width and height are numbers from 0 to 65535")
    return int(width), int(height)


# -- the pod's container -----------------------------------------------------------------


def container_names(manifest: Mapping[str, Any]) -> list[str]:
    spec = manifest.get("spec") or {}
    return [str(c.get("name", "")) for c in spec.get("containers") or []]


def choose_container(manifest: Mapping[str, Any], requested: str, pod: str) -> str:
    """The container a request means; kube's BadRequest when it must name one or names one
    the pod does not have."""
    names = container_names(manifest)
    if not requested:
        if len(names) == 1:
            return names[0]
        raise bad_request(
            f"a container name must be specified for pod {pod}, choose one of: [{' '.join(names)}]"
        )
    if requested not in names and not (
        requested == MESH_SIDECAR and container_status(manifest, requested)
    ):
        # (A meshed pod's sidecar, which its node started without a spec entry, is one.)
        raise bad_request(f"container {requested} is not valid for pod {pod}")
    return requested


def container_status(manifest: Mapping[str, Any], container: str) -> Mapping[str, Any]:
    status = manifest.get("status") or {}
    for entry in status.get("containerStatuses") or []:
        if entry.get("name") == container:
            return entry
    return {}


def not_running(pod: str, phase: str) -> APIError:
    return bad_request(f"pod {pod} is not running (its phase is {phase or 'Pending'})")
