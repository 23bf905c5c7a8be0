"""The NATS wall: which identity may publish and subscribe where, as the server enforces it.

Why this exists: a check in the gateway is only as good as the subjects nobody can go around
it on. With this ``authorization`` block in its configuration, the embedded server itself
refuses a connection that does not sign its nonce with a known nkey, and keeps every identity
to its subjects (DESIGN.md, "Trust"):

* **control plane** (``up``'s roles, gateway processes, separately started agents, schedulers
  and simulators): everything: they append events, serve the queue groups, hold the
  leases and set up the streams.
* **node** (the node agents' key, ``agent.nk``): a control plane's permissions less what only
  the gateway, the controllers and the query services do: no events of kinds other than pods
  and nodes, no audit records, no user commands, no stream or message deletion or purge, no
  writes to the leader, member, nonce and secret-key buckets or the snapshot store, and no
  subscription on ``fleet.cmd.>``/``fleet.qry.>`` (it serves neither, so it cannot answer in
  the gateway's place). Subjects that name a node (its Node's events, its lease, its usage)
  cannot be narrowed to one node here: the key is shared by the agents of a machine.
* **user**: requests on the command and query subjects (``fleet.cmd.>``, ``fleet.qry.>``),
  replies only under its own inbox prefix (``_INBOX_<public key>.>``: nobody reads another's
  replies). No events, no queue groups, no key-value buckets, no JetStream API at all.
  ``fleet.cmd.user.>`` (who may connect at all) is refused too, and so is
  ``fleet.qry.podconfig`` (a pod's Secret values, opened: the node agents' question only).
* **metrics publisher** (a user also in the group ``fleetlog:metrics-publishers``, or
  ``fleetlog:metrics-publishers:<namespace>`` for one namespace): a user's subjects and the
  workload-published metric subjects (``fleet.metrics.custom.<ns>.>`` and
  ``fleet.metrics.external.<ns>.>``, ``streams.telemetry``) of every namespace or of those
  named: the identity a workload publishes its requests-per-second or queue depth with.
* **admin** (a user in the group ``system:masters``): a user's subjects and the user-management
  commands, and the JetStream API's *reading* calls (stream and consumer info, direct and
  message gets, ephemeral consumers and their pulls, flow-control replies), which the CLI's log
  readers need (``events``, ``history``, ``replay``, ``audit``, ``logs``, ``top``). Nothing
  that creates, updates, purges or deletes a stream, and no ``$KV`` or ``$O`` writes; no
  ``fleet.qry.podconfig`` either. An admin also publishes every namespace's metrics and sets
  the simulator's load (``fleet.sim.load``, which ``fleetlog sim`` answers).

Permissions are allow-lists, so a subject nobody thought of is refused, and the server answers
a refused publish with a permissions violation (the request itself then times out).
Pure: :func:`authorization_config` only writes text; ``fleetlog up`` puts it in the embedded
server's configuration and reloads the server when the users change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from core.api.catalog import KINDS
from streams.definitions import (
    AUDIT_PREFIX,
    CUSTOM_METRICS_PREFIX,
    EXTERNAL_METRICS_PREFIX,
    LEADER_BUCKET,
    MEMBERS_BUCKET,
    NONCE_BUCKET,
    SECRET_KEYS_BUCKET,
)
from streams.identity import inbox_prefix
from streams.subjects import (
    COMMAND_PREFIX,
    EVENT_PREFIX,
    POD_CONFIG_SUBJECT,
    QUERY_PREFIX,
    encode_token,
)

CONTROL_PLANE_BUCKETS = (LEADER_BUCKET, MEMBERS_BUCKET, NONCE_BUCKET, SECRET_KEYS_BUCKET)

MASTERS_GROUP = "system:masters"
"""Kubernetes' group of cluster administrators (bound to ``cluster-admin``)."""
METRICS_PUBLISHERS_GROUP = "fleetlog:metrics-publishers"
"""Users who may publish workload metrics: of every namespace, or of ``<group>:<namespace>``."""
SIM_LOAD_SUBJECT = "fleet.sim.load"
"""The simulator's load setting (``handlers.simusage``): an admin's to send."""
ALL_NAMESPACES = "*"

USER_COMMANDS = f"{COMMAND_PREFIX}.user.>"
"""The commands that manage users: only admins may send them (the server refuses others)."""

JETSTREAM_READS = (
    "INFO",
    "STREAM.INFO.>",
    "STREAM.NAMES",
    "STREAM.LIST",
    "STREAM.MSG.GET.>",
    "DIRECT.GET.>",
    "CONSUMER.CREATE.>",
    "CONSUMER.INFO.>",
    "CONSUMER.NAMES.>",
    "CONSUMER.LIST.>",
    "CONSUMER.MSG.NEXT.>",
    "CONSUMER.DELETE.>",
)
"""The JetStream API calls that read (``$JS.API.<call>``, and in any domain). A consumer
reads; deleting one only ends a read (handlers take theirs up again)."""


class Profile(StrEnum):
    """What an identity may do on the server."""

    CONTROL_PLANE = "control-plane"
    NODE = "node"
    ADMIN = "admin"
    USER = "user"


@dataclass(frozen=True)
class NatsUser:
    """One identity the server admits: its nkey's public key and what it may do."""

    public_key: str
    profile: Profile
    name: str = ""
    """Who it is, for people reading the configuration (not used by the server)."""
    metrics: tuple[str, ...] = ()
    """The namespaces whose workload metrics it may publish (``*``: every one)."""


NODE_EVENT_KINDS = frozenset({"pod", "node"})
"""The kinds whose events a node agent appends itself (a pod's steps, and its node's
reservation given back in the same atomic append)."""

NODE_DENIED_PUBLISH = (
    f"{COMMAND_PREFIX}.user.>",
    f"{AUDIT_PREFIX}.>",
    *(f"$JS.API.STREAM.{call}.>" for call in ("DELETE", "PURGE", "MSG.DELETE")),
    *(f"$JS.*.API.STREAM.{call}.>" for call in ("DELETE", "PURGE", "MSG.DELETE")),
    *(f"$KV.{bucket}.>" for bucket in CONTROL_PLANE_BUCKETS),
    "$O.>",
)
"""What a node agent's key may not publish although the rest of the control plane may: user
management, the audit trail (the gateway's), deleting or purging a stream or a message, the
key-value buckets of leaders, members, nonces and secret keys, the snapshot store."""

NODE_DENIED_SUBSCRIBE = (f"{COMMAND_PREFIX}.>", f"{QUERY_PREFIX}.>")
"""A node agent serves no command or query: it may not join the gateway's or a query
service's queue group (and answer in their place) nor read other identities' requests."""


def profile_of(groups: Iterable[str]) -> Profile:
    """A stored user's profile: admin in ``system:masters``, else user."""
    return Profile.ADMIN if MASTERS_GROUP in set(groups) else Profile.USER


def metrics_namespaces_of(groups: Iterable[str]) -> tuple[str, ...]:
    """The namespaces a stored user's groups let it publish metrics for (``*``: all)."""
    found: set[str] = set()
    for group in groups:
        if group == METRICS_PUBLISHERS_GROUP:
            found.add(ALL_NAMESPACES)
        elif (
            group.startswith(f"{METRICS_PUBLISHERS_GROUP}:")
            and group != f"{METRICS_PUBLISHERS_GROUP}:"
        ):
            found.add(group.removeprefix(f"{METRICS_PUBLISHERS_GROUP}:"))
    return (ALL_NAMESPACES,) if ALL_NAMESPACES in found else tuple(sorted(found))


def _metric_subjects(namespaces: Iterable[str]) -> list[str]:
    subjects = []
    for namespace in namespaces:
        token = ">" if namespace == ALL_NAMESPACES else f"{encode_token(namespace)}.>"
        subjects += [f"{CUSTOM_METRICS_PREFIX}.{token}", f"{EXTERNAL_METRICS_PREFIX}.{token}"]
    return subjects


def permissions(user: NatsUser) -> dict[str, dict[str, list[str]]]:
    """The server's ``permissions`` of ``user``."""
    if user.profile is Profile.CONTROL_PLANE:
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    if user.profile is Profile.NODE:
        # Deny rules win over allow rules in nats-server: everything a control-plane role
        # may do, less what only the gateway, the controllers and the query services do.
        other_kinds = sorted(k.lower() for k in KINDS if k.lower() not in NODE_EVENT_KINDS)
        return {
            "publish": {
                "allow": [">"],
                "deny": [
                    *NODE_DENIED_PUBLISH, *(f"{EVENT_PREFIX}.{kind}.>" for kind in other_kinds)
                ],
            },
            "subscribe": {"allow": [">"], "deny": list(NODE_DENIED_SUBSCRIBE)},
        }  # fmt: skip
    publish = [f"{COMMAND_PREFIX}.>", f"{QUERY_PREFIX}.>"]
    # A pod's Secret values, opened, are for the node that runs it (the control plane's
    # agents), never a person's: kube's node authorizer keeps these reads to nodes too.
    deny: list[str] = [POD_CONFIG_SUBJECT]
    if user.profile is Profile.ADMIN:
        for call in JETSTREAM_READS:
            publish += [f"$JS.API.{call}", f"$JS.*.API.{call}"]
        publish.append("$JS.FC.>")
        publish += [*_metric_subjects([ALL_NAMESPACES]), SIM_LOAD_SUBJECT]
    else:
        deny.insert(0, USER_COMMANDS)
        publish += _metric_subjects(user.metrics)
    rules: dict[str, dict[str, list[str]]] = {
        "publish": {"allow": publish},
        "subscribe": {"allow": [f"{inbox_prefix(user.public_key)}.>"]},
    }
    rules["publish"]["deny"] = deny
    return rules


def authorization_config(users: Sequence[NatsUser]) -> str:
    """The ``authorization`` block admitting exactly ``users`` (nobody else connects)."""
    lines = ["authorization {", "  users: ["]
    for user in sorted(users, key=lambda u: (u.profile, u.name, u.public_key)):
        entry = {"nkey": user.public_key, "permissions": permissions(user)}
        lines.append(f"    {json.dumps(entry)}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"
