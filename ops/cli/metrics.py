"""``fleetlog metrics publish`` and ``metrics load``: feed the autoscalers by hand.

Why this exists: an HPA on a Pods, Object or External metric reads what workloads publish on
the documented subjects (``streams.telemetry``: ``fleet.metrics.custom.<ns>.pods.<pod>.<metric>``,
``…custom.<ns>.objects.<kind>.<name>.<metric>``, ``fleet.metrics.external.<ns>.<metric>``).
A workload publishes there with any NATS client; ``publish`` writes one sample the same way,
for a person trying an HPA out, a test or a script. ``load`` sets the synthetic CPU and memory
load that ``fleetlog sim`` gives its pods (the ``fleet.sim.load`` request of
``handlers.simusage``), so a Resource-metric HPA can be watched at work without a real load.
Heavy modules are imported when the command runs (``fleetlog --help`` stays fast).
"""

from __future__ import annotations

import json

import click

from core.errors import ValidationFailed
from ops.clitools import Failure, open_session, run


def _refused(what: str, who: str) -> Failure | None:
    """The server's refusal of this identity's publish, said as what to fix (None: there was
    none, the request only went unanswered)."""
    from streams.connection import refusals

    if not refusals():
        return None
    return Failure(f"the server refused {what} ({refusals()[-1]}): {who}")


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        for part in pair.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValidationFailed(f"expected KEY=VALUE, got {part!r}")
            labels[key.strip()] = value.strip()
    return labels


@click.group()
def metrics() -> None:
    """Workload metrics for the autoscalers: publish a sample, set simulated load."""


@metrics.command()
@click.argument("target")
@click.argument("metric")
@click.argument("value")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option(
    "-l", "--label", "labels", multiple=True, help="A label of the series (KEY=VALUE; repeatable)."
)
@click.option("--window", type=float, default=None, help="Seconds the value covers [default: 10].")
@click.pass_context
@run
async def publish(
    ctx: click.Context,
    target: str,
    metric: str,
    value: str,
    namespace: str,
    labels: tuple[str, ...],
    window: float | None,
) -> None:
    """Publish one sample: TARGET is pod/NAME (a Pods metric), KIND/NAME (an Object metric,
    e.g. service/web) or `external` (an External metric); VALUE a quantity (12, 250m, 1k)."""
    import time

    from ops.cliargs import split_ref
    from streams import jsapi
    from streams.telemetry import (
        BadMetricSample,
        custom_object_metric_subject,
        custom_pod_metric_subject,
        decode_metric_sample,
        external_metric_subject,
        metric_sample_body,
    )

    if target == "external":
        subject = external_metric_subject(namespace, metric)
    else:
        kind, name = split_ref(target)
        subject = (
            custom_pod_metric_subject(namespace, name, metric)
            if kind == "Pod"
            else custom_object_metric_subject(namespace, kind, name, metric)
        )
    body = metric_sample_body(value=value, labels=_labels(labels), window_s=window)
    # Refused here as its readers would refuse it, so a mistake is said, not silently dropped.
    try:
        decode_metric_sample(subject, body, received_ns=time.time_ns())
    except BadMetricSample as exc:
        raise ValidationFailed(str(exc)) from exc
    async with open_session(ctx) as s:
        try:
            ack = await jsapi.jetstream(s.nc).publish(subject, body, timeout=5)
        except TimeoutError as exc:
            refused = _refused(
                "the sample",
                f"{namespace}'s metrics are published by users in the group "
                f"fleetlog:metrics-publishers:{namespace} or fleetlog:metrics-publishers, "
                "and by admins",
            )
            if refused is None:
                raise
            raise refused from exc
    click.echo(f"published {subject} (sequence {ack.seq})")


@metrics.command()
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-l", "--selector", default=None, help="The pods whose labels match (app=web).")
@click.option("--pod", default=None, help="One pod by name.")
@click.option("--cpu", default=None, help="CPU each pod uses (300m); 0 for none.")
@click.option("--memory", default=None, help="Memory each pod uses (64Mi).")
@click.pass_context
@run
async def load(
    ctx: click.Context,
    namespace: str,
    selector: str | None,
    pod: str | None,
    cpu: str | None,
    memory: str | None,
) -> None:
    """Set the synthetic load of simulated pods (what `fleetlog sim` reports as their usage)."""
    import nats.errors

    from handlers.simusage import LOAD_SUBJECT

    if (selector is None) == (pod is None):
        raise ValidationFailed("name the pods with exactly one of --selector and --pod")
    request: dict[str, object] = {"namespace": namespace}
    if pod is not None:
        request["pod"] = pod
    else:
        request["selector"] = _labels((selector or "",))
    if cpu is not None:
        request["cpu"] = cpu
    if memory is not None:
        request["memory"] = memory
    async with open_session(ctx) as s:
        try:
            reply = await s.nc.request(LOAD_SUBJECT, json.dumps(request).encode(), timeout=5)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            refused = _refused("the load setting", "simulated load is set by admins")
            raise (refused or Failure("no simulator answered: is `fleetlog sim` running?")) from exc
    answer = json.loads(reply.data)
    if "error" in answer:
        raise Failure(str(answer["error"]))
    click.echo(f"load set on {answer.get('pods', 0)} pod(s) now running")
