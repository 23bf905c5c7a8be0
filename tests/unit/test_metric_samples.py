"""The workload-published metric sample as its readers decode it (``streams.telemetry``): the
documented subjects, the body's fields and defaults, and each refusal (issue 19)."""

from __future__ import annotations

import msgpack
import pytest

from streams.telemetry import (
    BadMetricSample,
    custom_object_metric_subject,
    custom_pod_metric_subject,
    decode_metric_sample,
    external_metric_subject,
    metric_sample_body,
)

NOW = 1_800_000_000 * 10**9


def test_subjects_name_the_namespace_the_object_and_the_metric_as_tokens() -> None:
    assert (
        custom_pod_metric_subject("shop", "web-1", "rps")
        == "fleet.metrics.custom.shop.pods.web-1.rps"
    )
    assert (
        custom_object_metric_subject("shop", "Ingress", "main.route", "hits")
        == "fleet.metrics.custom.shop.objects.Ingress.main_2Eroute.hits"
    )
    assert (
        external_metric_subject("shop", "queue_depth")
        == "fleet.metrics.external.shop.queue_5Fdepth"
    )


def test_a_pods_sample_reads_value_labels_time_and_window() -> None:
    body = metric_sample_body(value="250m", labels={"path": "/"}, at_ns=NOW - 10**9, window_s=30)
    sample = decode_metric_sample(
        custom_pod_metric_subject("shop", "web-1", "rps"), body, received_ns=NOW
    )
    assert (sample.source, sample.namespace, sample.kind, sample.name, sample.metric) == (
        "pods", "shop", "Pod", "web-1", "rps",
    )  # fmt: skip
    assert sample.milli_value == 250
    assert sample.labels == (("path", "/"),)
    assert sample.at_ns == NOW - 10**9 and sample.window_s == 30


def test_defaults_are_the_arrival_time_and_the_usage_period_and_msgpack_is_read_too() -> None:
    body = msgpack.packb({"value": 12, "metric": "queue"})
    sample = decode_metric_sample(external_metric_subject("ns", "queue"), body, received_ns=NOW)
    assert (sample.source, sample.name, sample.milli_value) == ("external", "", 12000)
    assert sample.at_ns == NOW and sample.window_s == 10.0


@pytest.mark.parametrize(
    ("subject", "body", "why"),
    [
        ("fleet.metrics.custom.ns.pods.web", b'{"value": "1"}', "is not"),
        ("fleet.metrics.custom.ns.things.a.b", b'{"value": "1"}', "is not"),
        ("fleet.metrics.external.ns.q", b"\xc1", "neither JSON nor msgpack"),
        ("fleet.metrics.external.ns.q", msgpack.packb([1, 2]), "an object"),
        ("fleet.metrics.external.ns.q", b"{}", "value must be a quantity"),
        ("fleet.metrics.external.ns.q", b'{"value": true}', "value must be a quantity"),
        ("fleet.metrics.external.ns.q", b'{"value": "12 apples"}', "not a quantity"),
        ("fleet.metrics.external.ns.q", b'{"value": "-1"}', "negative"),
        ("fleet.metrics.external.ns.q", b'{"value": "1", "metric": "other"}', "published on"),
        ("fleet.metrics.external.ns.q", b'{"value": "1", "labels": ["a"]}', "labels"),
        ("fleet.metrics.external.ns.q", b'{"value": "1", "timestamp": "soon"}', "RFC 3339"),
        ("fleet.metrics.external.ns.q", b'{"value": "1", "windowSeconds": 0}', "windowSeconds"),
        ("fleet.metrics.external.ns.q", b'{"value": "1", "windowSeconds": "9"}', "windowSeconds"),
        ("fleet.metrics.external.ns.q", b'{"value": "1", "x": "' + b"y" * 4096 + b'"}', "bytes"),
    ],
)
def test_what_a_reader_refuses(subject: str, body: bytes, why: str) -> None:
    with pytest.raises(BadMetricSample, match=why):
        decode_metric_sample(subject, body, received_ns=NOW)


def test_a_timestamp_far_ahead_of_arrival_and_too_many_labels_are_refused() -> None:
    subject = external_metric_subject("ns", "q")
    ahead = metric_sample_body(value="1", at_ns=NOW + 120 * 10**9)
    with pytest.raises(BadMetricSample, match="future"):
        decode_metric_sample(subject, ahead, received_ns=NOW)
    many = metric_sample_body(value="1", labels={f"k{i}": "v" for i in range(17)})
    with pytest.raises(BadMetricSample, match="more than 16 labels"):
        decode_metric_sample(subject, many, received_ns=NOW)
