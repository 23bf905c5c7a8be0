"""Micro-benchmark of what signed commands and RBAC add to each command, in-process.

    python -m ops.bench_signing [--commands 2000]

Why this exists: issue 17 wants the overhead of signing, verification and RBAC on a command's
round trip below 0.3 ms; this measures each part's CPU time alone (the client's signature,
the gateway's check, one RBAC decision through a RoleBinding of ``edit``), where a full
``ops.bench_commands`` run would hide it in the host's noise. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import secrets
import time

from core.access import bootstrap, rbac
from core.access.commandauth import command_request, user_identity
from core.access.signing import check_signature, sign
from streams.identity import generate_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2000)
    count = parser.parse_args().commands
    seed, payload, subject = (
        generate_seed().encode(),
        secrets.token_bytes(600),
        "fleet.cmd.pod.apply",
    )
    started = time.perf_counter()
    for _ in range(count):
        signature = sign(
            seed, subject=subject, payload=payload, signed_at_ns=time.time_ns(),
            nonce=secrets.token_urlsafe(16),
        )  # fmt: skip
    signed = time.perf_counter()
    for _ in range(count):
        check_signature(signature, subject=subject, payload=payload)
    verified = time.perf_counter()
    binding = {
        "metadata": {"name": "b", "namespace": "a"},
        "roleRef": {"kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "u"}],
    }
    policy = rbac.Policy.build(
        cluster_roles=bootstrap.CLUSTER_ROLES,
        cluster_role_bindings=bootstrap.CLUSTER_ROLE_BINDINGS,
        role_bindings=[binding],
    )
    user = user_identity("u", ()).user
    for _ in range(count):
        request = command_request(kind="Pod", verb="create", namespace="a", name="x", exists=False)
        policy.authorize(user, request)
    decided = time.perf_counter()
    per = [(signed - started), (verified - signed), (decided - verified)]
    sign_us, verify_us, rbac_us = (1e6 * part / count for part in per)
    print(
        f"{count} commands: sign {sign_us:.0f} us (client), verify {verify_us:.0f} us, "
        f"rbac {rbac_us:.0f} us (gateway); total {sign_us + verify_us + rbac_us:.0f} us"
    )


if __name__ == "__main__":
    main()
