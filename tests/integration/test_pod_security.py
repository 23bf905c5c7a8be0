"""Pod Security Admission and the admission chain through the gateway, against a real
nats-server: a namespace's ``pod-security.kubernetes.io/*`` labels refuse (``enforce``), warn
about (``warn``) or record (``audit``) pods with Kubernetes' words; workloads are warned about
and their pods refused (the replica set says so as kube's FailedCreate); and every command's
audit record names the admission stages that changed or refused it, in the chain's order."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from nats.aio.client import Client

from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.audit import AuditRecord, read_audit
from streams.commandbus import CommandClient, CommandFailed
from streams.eventstore import EventStore
from streams.subjects import event_filter, event_subject
from tests.integration.support import cli, eventually, workload_roles
from tests.integration.test_apiserver import API, api  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

RESTRICTED_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_VIOLATIONS = (
    'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
    '(container "app" must set securityContext.allowPrivilegeEscalation=false), '
    'unrestricted capabilities (container "app" must set '
    'securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "app" '
    'must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "app" '
    'must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
)
PRIVILEGED_VIOLATION = (
    'violates PodSecurity "baseline:latest": privileged (container "app" must not set '
    "securityContext.privileged=true)"
)


def would(violation: str) -> str:
    """A warning's (or audit annotation's) words for ``violation``, as kube-apiserver's."""
    assert violation.startswith("violates ")
    return "would violate " + violation.removeprefix("violates ")


def namespace(name: str, **modes: str) -> dict[str, Any]:
    labels = {f"pod-security.kubernetes.io/{mode}": level for mode, level in modes.items()}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(
    name: str, namespace: str, *, security: dict[str, Any] | None = None, image: str = "nginx"
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": image}
    if security is not None:
        container["securityContext"] = security
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [container]},
    }


def deployment(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            },
        },
    }


async def record_of(nc: Client, command_name: str, verb: str = "create") -> AuditRecord:
    """The audit record of the last command on an object named ``command_name``."""
    found: list[AuditRecord] = []

    async def recorded() -> bool:
        found[:] = [r for r in await read_audit(nc) if r.name == command_name and r.verb == verb]
        return bool(found)

    await eventually(recorded)
    return found[-1]


async def test_a_pod_violating_restricted_is_refused_with_kubes_reason_and_nothing_appended(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Namespace", "apply", {"manifest": namespace("secure", enforce="restricted")})
    with pytest.raises(CommandFailed) as refused:
        await client.send("Pod", "create", {"manifest": pod("web", "secure")})
    assert refused.value.code == "forbidden"
    assert refused.value.message == f'pods "web" is forbidden: {RESTRICTED_VIOLATIONS}'
    assert await store.last_seq(event_subject("Pod", "secure", "web")) == 0

    record = await record_of(nc, "web")
    assert record.outcome == "rejected" and record.code == "forbidden"
    assert record.admission[-1] == 'denied by PodSecurity: pods "web" is forbidden: ' + (
        RESTRICTED_VIOLATIONS
    )
    assert record.annotations["pod-security.kubernetes.io/enforce-policy"] == "restricted:latest"

    # The same pod, made to meet restricted, is admitted.
    await client.send("Pod", "create", {"manifest": pod("web", "secure", security=RESTRICTED_SECURITY)})  # fmt: skip
    assert await store.last_seq(event_subject("Pod", "secure", "web")) > 0


async def test_baseline_admits_a_plain_pod_and_refuses_a_privileged_one(
    gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Namespace", "apply", {"manifest": namespace("base", enforce="baseline")})
    admitted = await client.send("Pod", "create", {"manifest": pod("plain", "base")})
    assert admitted.events == ["PodCreated"] and admitted.warnings == []
    with pytest.raises(CommandFailed) as refused:
        manifest = pod("root", "base", security={"privileged": True})
        await client.send("Pod", "create", {"manifest": manifest})
    assert refused.value.message == f'pods "root" is forbidden: {PRIVILEGED_VIOLATION}'


async def test_warn_creates_the_pod_and_tells_the_client_audit_records_it(
    nc: Client, gateway: Gateway, client: CommandClient, nats_server: Any, tmp_path: Path
) -> None:
    labelled = namespace("loose", warn="restricted", audit="baseline")
    await client.send("Namespace", "apply", {"manifest": labelled})
    created = await client.send("Pod", "create", {"manifest": pod("web", "loose")})
    assert created.events == ["PodCreated"]
    assert created.warnings == [would(RESTRICTED_VIOLATIONS)]
    assert created.warnings[0].startswith('would violate PodSecurity "restricted:latest": ')
    record = await record_of(nc, "web")
    assert "warned by PodSecurity: " + would(RESTRICTED_VIOLATIONS) in record.admission
    assert "pod-security.kubernetes.io/audit-violations" not in record.annotations  # baseline ok

    root = pod("root", "loose", security={"privileged": True})
    await client.send("Pod", "create", {"manifest": root})
    audited = await record_of(nc, "root")
    assert audited.outcome == "accepted"
    assert audited.annotations["pod-security.kubernetes.io/audit-violations"] == (
        would(PRIVILEGED_VIOLATION)
    )
    assert "audited by PodSecurity: " + would(PRIVILEGED_VIOLATION) in audited.admission

    # The CLI prints the warning as kubectl does, and applies the pod.
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(pod("cli", "loose")))
    applied = await cli(nats_server.url, "apply", "-f", str(manifest))
    assert applied.exit_code == 0, applied.output
    assert "Warning: " + would(RESTRICTED_VIOLATIONS) in applied.stderr
    assert "pod/cli created" in applied.stdout


async def test_a_deployment_is_accepted_with_a_warning_and_its_pods_are_refused(
    nc: Client,
    store: EventStore,
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    strict = namespace("strict", enforce="restricted", warn="restricted")
    await client.send("Namespace", "apply", {"manifest": strict})
    async with workload_roles(nc, store, projection):
        accepted = await client.send("Deployment", "create", {"manifest": deployment("web", "strict")})  # fmt: skip
        assert accepted.warnings == [would(RESTRICTED_VIOLATIONS)]

        def failure() -> str:
            for rs in projection.model.list("ReplicaSet", "strict"):
                for condition in (rs.manifest.get("status") or {}).get("conditions") or []:
                    if condition["type"] == "ReplicaFailure":
                        assert condition["reason"] == "FailedCreate"
                        return str(condition["message"])
            return ""

        async def reported() -> bool:
            return bool(failure())

        await eventually(reported, timeout=30)
        assert "is forbidden: " + RESTRICTED_VIOLATIONS in failure()
        assert list(projection.model.list("Pod", "strict")) == []
    assert await store.stream_last_seq() > 0
    pods = Projection(ClusterModel(), store, filter_subject=event_filter("Pod", "strict"))
    await pods.catch_up()
    assert list(pods.model.list("Pod", "strict")) == []


async def test_the_audit_record_names_each_stage_that_changed_or_refused_the_command(
    nc: Client, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Pod", "create", {"manifest": pod("web", "default")})
    record = await record_of(nc, "web")
    assert record.admission == [
        "mutated by LimitRanger: defaulted cpu, memory request for container app; "
        "cpu, memory limit for container app",
        "mutated by Priority: set priority 0",
        "mutated by DefaultTolerationSeconds: tolerates node.kubernetes.io/not-ready, "
        "node.kubernetes.io/unreachable (NoExecute) for 300s",
    ]
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "one", "namespace": "default"},
        "spec": {"hard": {"pods": "0"}},
    }
    await client.send("ResourceQuota", "create", {"manifest": quota})

    async def charged() -> bool:
        return bool((await gateway.policies.in_namespace("default")).quotas)

    await eventually(charged)
    with pytest.raises(CommandFailed, match="exceeded quota: one"):
        await client.send("Pod", "create", {"manifest": pod("second", "default")})
    refused = await record_of(nc, "second")
    assert refused.admission[-1].startswith("denied by ResourceQuota: exceeded quota: one")

    with pytest.raises(CommandFailed, match='namespace "nowhere" not found'):
        await client.send("Pod", "create", {"manifest": pod("lost", "nowhere")})
    lost = await record_of(nc, "lost")
    assert lost.admission[-1].startswith('denied by NamespaceLifecycle: namespace "nowhere"')


async def test_raising_a_namespaces_enforce_level_warns_about_its_pods_and_bad_labels_fail(
    gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Namespace", "apply", {"manifest": namespace("team")})
    await client.send("Pod", "create", {"manifest": pod("a", "team")})
    await client.send("Pod", "create", {"manifest": pod("b", "team")})
    raised = await client.send(
        "Namespace", "apply", {"manifest": namespace("team", enforce="restricted")}
    )
    assert raised.warnings == [
        'existing pods in namespace "team" violate the new PodSecurity enforce level '
        '"restricted:latest"',
        "a (and 1 other pod): allowPrivilegeEscalation != false, unrestricted capabilities, "
        "runAsNonRoot != true, seccompProfile",
    ]
    again = await client.send(
        "Namespace", "apply", {"manifest": namespace("team", enforce="restricted")}
    )
    assert again.warnings == []  # the level did not change
    with pytest.raises(CommandFailed) as refused:
        await client.send("Namespace", "apply", {"manifest": namespace("team", enforce="strict")})
    assert refused.value.code == "invalid"
    assert 'Unsupported value: "strict"' in refused.value.message


async def test_the_kubernetes_door_refuses_with_kubes_message_and_sends_warning_headers(
    api: API,  # noqa: F811
    client: CommandClient,
) -> None:
    await client.send(
        "Namespace", "apply", {"manifest": namespace("web", enforce="baseline", warn="restricted")}
    )
    root = pod("root", "web", security={"privileged": True})
    status, body, _ = await post(api, "/api/v1/namespaces/web/pods", root)
    assert status == 403
    assert (body["reason"], body["message"]) == (
        "Forbidden",
        f'pods "root" is forbidden: {PRIVILEGED_VIOLATION}',
    )
    status, _, warnings = await post(api, "/api/v1/namespaces/web/pods", pod("plain", "web"))
    assert status == 201
    quoted = RESTRICTED_VIOLATIONS.replace('"', '\\"')
    assert warnings == [f'299 - "{would(quoted)}"']


async def post(api: API, path: str, body: dict[str, Any]) -> tuple[int, Any, list[str]]:  # noqa: F811
    context: ssl.SSLContext = api.ssl
    async with (
        aiohttp.ClientSession() as session,
        session.post(api.url + path, json=body, ssl=context) as response,
    ):
        return response.status, await response.json(), response.headers.getall("Warning", [])


async def test_why_and_audit_wide_show_what_admission_did_to_the_command(
    nc: Client, gateway: Gateway, client: CommandClient, nats_server: Any
) -> None:
    await client.send("Namespace", "apply", {"manifest": namespace("shown", warn="restricted")})
    await client.send("Pod", "create", {"manifest": pod("web", "shown")})
    await record_of(nc, "web")
    why = await cli(nats_server.url, "why", "pod/web", "-n", "shown")
    assert why.exit_code == 0, why.output
    assert "  admission: mutated by LimitRanger: defaulted cpu, memory request" in why.stdout
    assert "  admission: warned by PodSecurity: " + would(RESTRICTED_VIOLATIONS) in why.stdout
    wide = await cli(nats_server.url, "audit", "--name", "web", "-o", "wide")
    assert wide.exit_code == 0, wide.output
    assert "ADMISSION" in wide.stdout
    assert "mutated by DefaultTolerationSeconds" in wide.stdout
