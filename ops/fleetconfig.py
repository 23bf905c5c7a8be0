"""The fleetlog config: clusters, users and contexts, as a kubeconfig keeps them.

Why this exists: the NATS server admits only identities it knows (``streams.natsauth``), so
every CLI command and every role must say who it is, without a flag on every command line. As
k3s writes its kubeconfig where kubectl finds it, ``fleetlog up`` writes its admin's
credentials into this file at a default place (:func:`config_path`), and every command reads
its server, its user (an nkey seed, inline or in a file) and its default namespace from the
current context. ``FLEETLOG_CONFIG`` or ``--config`` name another file (a test cluster, a
second cluster), ``--context`` another context.

A context may also name the users of the processes run from this machine (``roles``: the
agent, scheduler, simulator and gateway processes connect as control-plane identities, not as
the person's user). The file is written 0600 in a 0700 directory; ``fleetlog config view``
shows it with the seeds left out.

The file (YAML)::

    apiVersion: fleetlog.dev/v1
    kind: Config
    current-context: fleetlog
    clusters: [{name: fleetlog, cluster: {server: nats://127.0.0.1:4222}}]
                # behind TLS: {server: tls://…, certificate-authority: PATH}
    users: [{name: fleetlog-admin, user: {seed: SU…}}]      # or {seed-file: PATH}
    contexts:
    - name: fleetlog
      context: {cluster: fleetlog, user: fleetlog-admin, namespace: default,
                roles: {agent: fleetlog-agent, …}}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import FleetError

if TYPE_CHECKING:
    from streams.identity import Credentials

ENV_CONFIG = "FLEETLOG_CONFIG"
API_VERSION = "fleetlog.dev/v1"
REDACTED = "REDACTED"
ROLES = ("gateway", "agent", "scheduler", "sim")
"""The processes that connect as an identity of their own (a context's ``roles``)."""


class ConfigError(FleetError):
    """The fleetlog config cannot be read or does not hold what was asked (says what to fix)."""

    code = "config"


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config``, else ``FLEETLOG_CONFIG``, else ``$XDG_CONFIG_HOME/fleetlog/config``
    (``~/.config/fleetlog/config`` when that is unset)."""
    if explicit:
        return Path(explicit)
    named = os.environ.get(ENV_CONFIG, "").strip()
    if named:
        return Path(named)
    base = os.environ.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
    return Path(base) / "fleetlog" / "config"


@dataclass
class FleetConfig:
    """The file's content, by name."""

    current_context: str | None = None
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The YAML document (lists of named entries, as a kubeconfig)."""
        return {
            "apiVersion": API_VERSION,
            "kind": "Config",
            "current-context": self.current_context or "",
            "clusters": [{"name": n, "cluster": c} for n, c in sorted(self.clusters.items())],
            "users": [{"name": n, "user": u} for n, u in sorted(self.users.items())],
            "contexts": [{"name": n, "context": c} for n, c in sorted(self.contexts.items())],
        }

    def redacted(self) -> dict[str, Any]:
        """:meth:`document` with every inline seed replaced (``config view``)."""
        document = self.document()
        for entry in document["users"]:
            if "seed" in entry["user"]:
                entry["user"] = {**entry["user"], "seed": REDACTED}
        return document


def load(path: Path) -> FleetConfig:
    """The config at ``path`` (an empty one when there is no file)."""
    from ops.safeyaml import load_one

    try:
        text = path.read_text()
    except FileNotFoundError:
        return FleetConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read the fleetlog config {path}: {exc.strerror}") from None
    try:
        document = load_one(text) or {}
    except Exception as exc:  # a YAML error of any kind: say where
        raise ConfigError(f"the fleetlog config {path} is not valid YAML: {exc}") from None
    if not isinstance(document, Mapping):
        raise ConfigError(f"the fleetlog config {path} is not a mapping")
    return FleetConfig(
        current_context=str(document.get("current-context") or "") or None,
        clusters=_named(document, "clusters", "cluster", path),
        users=_named(document, "users", "user", path),
        contexts=_named(document, "contexts", "context", path),
    )


def _named(document: Mapping[str, Any], key: str, inner: str, path: Path) -> dict[str, Any]:
    entries = document.get(key) or []
    if not isinstance(entries, list):
        raise ConfigError(f"the fleetlog config {path}: {key} must be a list")
    found: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get(inner) or {}, Mapping):
            raise ConfigError(f"the fleetlog config {path}: every {key} entry needs a name")
        if not entry.get("name"):
            raise ConfigError(f"the fleetlog config {path}: every {key} entry needs a name")
        found[str(entry["name"])] = dict(entry.get(inner) or {})
    return found


def save(path: Path, config: FleetConfig) -> None:
    """Write ``config`` to ``path``, owner-only (it may hold seeds)."""
    import yaml

    from streams.identity import write_private

    write_private(path, yaml.safe_dump(config.document(), sort_keys=False))


@dataclass(frozen=True)
class Target:
    """What a command connects to and as whom, from the config and the command line."""

    server: str | None
    """The context's server (None: no context names one)."""
    namespace: str | None
    user: str | None
    user_entry: Mapping[str, Any] | None
    context: str | None
    path: Path
    seal_key: Path | None = None
    """The cluster's seal key file, as the context's cluster names it (``seal-key``)."""
    certificate_authority: Path | None = None
    """The CA the server's TLS certificate is verified with (the cluster's
    ``certificate-authority``, as in a kubeconfig; None: the system's trust store)."""

    def credentials(self) -> Credentials | None:
        """The user's nkey (None: the context names no user)."""
        if self.user_entry is None:
            return None
        return user_credentials(self.user or "", self.user_entry, path=self.path)


def target(
    config: FleetConfig, *, path: Path, context: str | None = None, role: str | None = None
) -> Target:
    """The current context (or ``context``) resolved; with ``role``, as that role's user when
    the context names one. No context at all: no server, no user."""
    name = context or config.current_context
    if name is None:
        return Target(None, None, None, None, None, path)
    entry = config.contexts.get(name)
    if entry is None:
        known = ", ".join(sorted(config.contexts)) or "none"
        raise ConfigError(
            f"context {name!r} is not in the fleetlog config {path} (contexts: {known}); "
            "see `fleetlog config get-contexts`"
        )
    cluster = config.clusters.get(str(entry.get("cluster") or ""), {})
    user = entry.get("user")
    roles = entry.get("roles") or {}
    if role is not None and isinstance(roles, Mapping) and roles.get(role):
        user = roles[role]
    user_entry = None
    if user:
        user_entry = config.users.get(str(user))
        if user_entry is None:
            raise ConfigError(
                f"context {name!r} names the user {user!r}, which is not in the fleetlog "
                f"config {path}"
            )
    return Target(
        server=str(cluster["server"]) if cluster.get("server") else None,
        namespace=str(entry["namespace"]) if entry.get("namespace") else None,
        user=str(user) if user else None,
        user_entry=user_entry,
        context=name,
        path=path,
        seal_key=Path(str(cluster["seal-key"])).expanduser() if cluster.get("seal-key") else None,
        certificate_authority=(
            Path(str(cluster["certificate-authority"])).expanduser()
            if cluster.get("certificate-authority")
            else None
        ),
    )


def user_credentials(name: str, entry: Mapping[str, Any], *, path: Path) -> Credentials:
    """A user entry's nkey: its inline ``seed`` or its ``seed-file``."""
    from streams.identity import Credentials, CredentialsError, read_seed_file

    try:
        if entry.get("seed"):
            return Credentials(str(entry["seed"]), source=f"user {name!r} of {path}")
        if entry.get("seed-file"):
            return read_seed_file(Path(str(entry["seed-file"])).expanduser())
    except CredentialsError as exc:
        raise ConfigError(f"{exc} (user {name!r} of the fleetlog config {path})") from None
    raise ConfigError(f"user {name!r} of the fleetlog config {path} has no seed or seed-file")


def set_context(
    config: FleetConfig,
    *,
    name: str,
    server: str,
    user: str,
    user_entry: dict[str, Any],
    namespace: str = "default",
    roles: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
    make_current: bool = True,
    seal_key: Path | None = None,
    certificate_authority: Path | None = None,
) -> None:
    """Add or replace a context, its cluster (named as the context, with the file of its seal
    key and of the CA of its server's TLS certificate, if given) and its users."""
    config.clusters[name] = {"server": server}
    if seal_key is not None:
        config.clusters[name]["seal-key"] = str(seal_key.resolve())
    if certificate_authority is not None:
        config.clusters[name]["certificate-authority"] = str(certificate_authority.resolve())
    config.users[user] = user_entry
    context: dict[str, Any] = {"cluster": name, "user": user, "namespace": namespace}
    if roles:
        context["roles"] = {}
        for role, (role_user, role_entry) in roles.items():
            config.users[role_user] = role_entry
            context["roles"][role] = role_user
    config.contexts[name] = context
    if make_current or not config.current_context:
        config.current_context = name
