"""The streaming subresources' pure rules: channel framing, exec results, options, containers."""

from __future__ import annotations

import json

import pytest

from core.kubeapi.status import APIError
from core.kubeapi.streaming import (
    ChannelMessage,
    choose_container,
    decode,
    encode,
    exec_options,
    exec_result,
    exec_stream_kinds,
    forwarded_ports,
    log_options,
    parse_time_ns,
    port_preamble,
    resize_messages,
    spdy_forward_request,
    terminal_size,
    timestamp,
)

NOW = 1_800_000_000 * 1_000_000_000


def test_a_message_names_its_channel_in_the_first_byte() -> None:
    assert encode(1, b"hi") == b"\x01hi"
    assert decode(b"\x00input", protocol="v4.channel.k8s.io") == ChannelMessage(0, b"input")
    assert decode(b"\x03", protocol="v5.channel.k8s.io") == ChannelMessage(3, b"")
    with pytest.raises(ValueError):
        decode(b"", protocol="v5.channel.k8s.io")
    with pytest.raises(ValueError):
        encode(256, b"")


def test_v5_closes_a_channel_with_255_and_v4_has_no_close() -> None:
    assert decode(b"\xff\x00", protocol="v5.channel.k8s.io") == ChannelMessage(0, close=True)
    assert decode(b"\xff\x00", protocol="v4.channel.k8s.io") == ChannelMessage(255, b"\x00")
    with pytest.raises(ValueError):
        decode(b"\xff", protocol="v5.channel.k8s.io")


def test_the_error_channel_says_success_or_the_exit_code_as_kubelet_does() -> None:
    assert json.loads(exec_result(0, command=["true"]))["status"] == "Success"
    failed = json.loads(exec_result(3, command=["sh", "-c", "exit 3"]))
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}
    assert failed["message"] == (
        "command terminated with non-zero exit code: error executing command "
        "['sh', '-c', 'exit 3'], exit code 3"
    )
    broken = json.loads(exec_result(None, command=["x"], error="the node went away"))
    assert (broken["status"], broken["message"]) == ("Failure", "the node went away")


def test_port_forward_channels_open_with_the_port_little_endian() -> None:
    assert port_preamble(0, 8080) == b"\x00\x90\x1f"
    assert port_preamble(3, 80) == b"\x03\x50\x00"
    assert forwarded_ports(["8080,9090", "53"]) == [8080, 9090, 53]
    for bad in (["0"], ["x"], ["70000"], []):
        with pytest.raises(APIError):
            forwarded_ports(bad)


def test_log_options_follow_kube_and_refuse_what_it_refuses() -> None:
    options = log_options(
        {"container": "c", "follow": "true", "tailLines": "5", "sinceSeconds": "10",
         "timestamps": "true", "limitBytes": "100"},
        now_ns=NOW,
    )  # fmt: skip
    assert (options.container, options.follow, options.tail_lines) == ("c", True, 5)
    assert options.since_ns == NOW - 10 * 1_000_000_000
    assert options.timestamps and options.limit_bytes == 100
    assert log_options({}, now_ns=NOW).tail_lines is None
    assert log_options({"sinceTime": "2026-12-05T10:00:00Z"}, now_ns=NOW).since_ns == (
        parse_time_ns("2026-12-05T10:00:00+00:00")
    )
    refusals = {
        "at most one of `sinceTime` or `sinceSeconds` may be specified": {
            "sinceSeconds": "1", "sinceTime": "2026-12-05T10:00:00Z"
        },
        "sinceSeconds: Invalid value: 0: must be greater than 0": {"sinceSeconds": "0"},
        "limitBytes: Invalid value: 0: must be greater than 0": {"limitBytes": "0"},
        "tailLines: Invalid value: -1: must be greater than or equal to 0": {"tailLines": "-1"},
    }  # fmt: skip
    for message, query in refusals.items():
        with pytest.raises(APIError) as refused:
            log_options(query, now_ns=NOW)
        assert (refused.value.code, refused.value.message) == (400, message)


def test_exec_options_need_a_command_and_a_stream() -> None:
    options = exec_options({"stdin": "true", "stdout": "true"}, ["sh", "-c", "echo hi"])
    assert options.command == ("sh", "-c", "echo hi") and options.stdin and not options.tty
    with pytest.raises(APIError, match="at least one command"):
        exec_options({"stdout": "true"}, [])
    with pytest.raises(APIError, match="at least one of stdin, stdout, stderr"):
        exec_options({}, ["true"])


def test_the_container_is_named_when_the_pod_has_several() -> None:
    one = {"spec": {"containers": [{"name": "main"}]}}
    two = {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}
    assert choose_container(one, "", "web") == "main"
    assert choose_container(two, "b", "web") == "b"
    with pytest.raises(APIError) as unnamed:
        choose_container(two, "", "web")
    assert unnamed.value.message == (
        "a container name must be specified for pod web, choose one of: [a b]"
    )
    with pytest.raises(APIError) as unknown:
        choose_container(one, "other", "web")
    assert unknown.value.message == "container other is not valid for pod web"


def test_timestamps_are_rfc3339_with_nanoseconds() -> None:
    assert timestamp(NOW + 5) == "2027-01-15T08:00:00.000000005Z"
    assert parse_time_ns("2027-01-15T08:00:00Z") == NOW


def test_a_spdy_port_forward_stream_is_read_as_the_kubelet_reads_it() -> None:
    error = spdy_forward_request({"port": "8080", "streamtype": "error", "requestid": "4"},
                                 stream_id=9)  # fmt: skip
    assert (error.request_id, error.port, error.error_stream) == ("4", 8080, True)
    # Without requestID (older clients) the error stream's id names the pair.
    assert spdy_forward_request({"port": "1", "streamtype": "error"}, stream_id=5).request_id == "5"
    assert spdy_forward_request({"port": "1", "streamtype": "data"}, stream_id=7).request_id == "5"
    for headers, message in (
        ({"streamtype": "data"}, '"port" header is required'),
        ({"port": "http", "streamtype": "data"}, 'unable to parse "http" as a port'),
        ({"port": "70000", "streamtype": "data"}, 'unable to parse "70000" as a port'),
        ({"port": "0", "streamtype": "data"}, 'port "0" must be > 0'),
        ({"port": "80"}, '"streamType" header is required'),
        ({"port": "80", "streamtype": "stdin"}, 'invalid stream type "stdin"'),
    ):
        with pytest.raises(ValueError) as raised:
            spdy_forward_request(headers, stream_id=1)
        assert str(raised.value) == message


def test_a_resize_message_is_the_terminals_width_and_height() -> None:
    assert terminal_size(b'{"Width":101,"Height":33}') == (101, 33)
    assert terminal_size(b"{}") == (0, 0)
    for bad in (b"nope", b"[1]", b'{"Width":-1,"Height":3}', b'{"Width":"80","Height":3}'):
        with pytest.raises(ValueError):
            terminal_size(bad)


def test_a_spdy_exec_waits_for_the_streams_it_asked_for() -> None:
    assert exec_stream_kinds(stdin=False, stdout=True, stderr=True, tty=False) == {
        "error", "stdout", "stderr"
    }  # fmt: skip
    assert exec_stream_kinds(stdin=True, stdout=True, stderr=False, tty=True) == {
        "error", "stdin", "stdout", "resize"
    }  # fmt: skip


def test_a_spdy_resize_stream_is_one_json_size_after_another() -> None:
    first, rest = resize_messages(b'{"Width":80,"Height":24}\n{"Width":1')
    assert first == [b'{"Width":80,"Height":24}'] and rest == b'{"Width":1'
    second, rest = resize_messages(rest + b'20,"Height":50}\n')
    assert second == [b'{"Width":120,"Height":50}'] and rest == b""
    assert resize_messages(b"{" + b" " * 5000) == ([], b"")  # garbage is not kept forever


def test_a_meshed_pods_sidecar_is_a_container_once_its_node_started_it() -> None:
    """``kubectl logs -c istio-proxy``: the sidecar has no spec entry (fleetlog's node starts
    it), but a status, as Istio's injected container."""
    meshed = {
        "spec": {"containers": [{"name": "web"}]},
        "status": {"containerStatuses": [{"name": "web"}, {"name": "istio-proxy"}]},
    }
    assert choose_container(meshed, "istio-proxy", "web") == "istio-proxy"
    assert choose_container(meshed, "", "web") == "web"  # the app, as Istio's default-container
    plain = {"spec": {"containers": [{"name": "web"}]}}
    with pytest.raises(APIError, match="container istio-proxy is not valid for pod web"):
        choose_container(plain, "istio-proxy", "web")
