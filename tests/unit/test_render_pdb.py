"""``fleetlog get pdb``: kubectl's columns (printPodDisruptionBudget), ``N/A`` for the bound
not set, the allowed disruptions from the status (0 before the controller has written it)."""

from __future__ import annotations

from typing import Any

from ops import render

NOW = 1_800_000_000 * 10**9


def item(name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                "metadata": {"name": name}, "spec": spec}  # fmt: skip
    if status is not None:
        manifest["status"] = status
    return {"name": name, "namespace": "default", "created_ns": NOW - 90 * 10**9,
            "manifest": manifest}  # fmt: skip


def test_the_rows_have_kubectls_columns() -> None:
    text = render.object_table(
        "PodDisruptionBudget",
        [
            item("web", {"minAvailable": 2}, {"disruptionsAllowed": 1}),
            item("api", {"maxUnavailable": "25%"}),
        ],
        now_ns=NOW, wide=False, show_namespace=False,
    )  # fmt: skip
    lines = [
        [cell.strip() for cell in line.split("  ") if cell.strip()] for line in text.splitlines()
    ]
    assert lines == [
        ["NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"],
        ["web", "2", "N/A", "1", "90s"],
        ["api", "N/A", "25%", "0", "90s"],
    ]
