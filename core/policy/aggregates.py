"""The policy aggregates: PriorityClass, LimitRange and ResourceQuota (with its usage ledger)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from core.api import payloads
from core.errors import (
    InvalidTransition,
)
from core.meta.aggregate import Resource
from core.policy.priorityclass import check_priority_class_update
from core.policy.quota import (
    CHARGED,
    canonical,
    exceeded_message,
    hard_amounts,
    unstated,
    with_quota_used,
)
from core.policy.quota import EVOLVE as QUOTA_EVOLVE


class PriorityClass(Resource):
    KIND = "PriorityClass"

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        check_priority_class_update(changed)


class LimitRange(Resource):
    KIND = "LimitRange"


class ResourceQuota(Resource):
    """A namespace's quota and its usage ledger (pod ``namespace/name`` -> charged amounts).

    The ledger is what :meth:`charge` guards: a pod's create is appended atomically with its
    charge under this aggregate's expectation, so two gateways racing for the last of a quota
    cannot both succeed (the loser's append fails, it decides again on the new ledger, and is
    refused)."""

    KIND = "ResourceQuota"

    EVOLVE = QUOTA_EVOLVE
    """``status`` shows ``hard`` and the ``used`` totals each charge or release recorded,
    exactly as the read model shows them; the charges per pod are the aggregate's own."""

    class Charged(Resource.Event, payloads.QuotaCharged):
        TYPE: ClassVar[str] = "QuotaCharged"

        def apply(self, aggregate: Resource) -> None:
            assert isinstance(aggregate, ResourceQuota)
            aggregate.book(self.pod, dict(self.amounts))
            super().apply(aggregate)

    class Released(Resource.Event, payloads.QuotaReleased):
        TYPE: ClassVar[str] = "QuotaReleased"

        def apply(self, aggregate: Resource) -> None:
            assert isinstance(aggregate, ResourceQuota)
            aggregate.book(self.pod, None)
            super().apply(aggregate)

    STATE_IS_MANIFEST: ClassVar[bool] = False  # the usage ledger is not in the manifest

    def begin_life(self, manifest: dict[str, Any], uid: str) -> None:
        super().begin_life(manifest, uid)
        self.charges: dict[str, dict[str, int]] = {}
        self.used: dict[str, int] = {}

    def book(self, pod: str, amounts: dict[str, int] | None) -> None:
        """Fold one ledger change: ``amounts`` replaces the pod's charge (None removes it)."""
        for name, amount in self.charges.pop(pod, {}).items():
            self.used[name] = self.used.get(name, 0) - amount
        if amounts is not None:
            self.charges[pod] = amounts
            for name, amount in amounts.items():
                self.used[name] = self.used.get(name, 0) + amount

    @property
    def hard(self) -> dict[str, str]:
        return dict((self.manifest.get("spec") or {}).get("hard") or {})

    def carry_server_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """``status`` is the server's: it follows the (new) ``hard`` and the ledger."""
        return with_quota_used(manifest, self.used)

    def charge(
        self, *, pod: str, usage: dict[str, int], pod_manifest: dict[str, Any], at: datetime
    ) -> None:
        """Charge ``pod``'s ``usage`` (``core.policy.quota.pod_usage``); refused, with Kubernetes'
        message, if a resource the quota limits would exceed ``hard`` or a container does not
        state it. A pod charged before (a re-creation) has its old charge replaced."""
        self.require_exists()
        name = self.id.rsplit("/", 1)[-1]
        hard = self.hard
        missing = unstated(pod_manifest, hard)
        if missing:
            raise InvalidTransition(
                f"failed quota: {name}: must specify "
                + "; ".join(f"{res} for: {','.join(names)}" for res, names in missing.items()),
                code="forbidden",
            )
        limits = hard_amounts(hard)
        previous = self.charges.get(pod, {})
        used = {k: self.used.get(k, 0) - previous.get(k, 0) for k in CHARGED}
        over = sorted(
            stated
            for stated in hard
            if (wanted := usage.get(canonical(stated), 0)) > 0
            and used[canonical(stated)] + wanted > limits[canonical(stated)]
        )
        if over:
            raise InvalidTransition(
                exceeded_message(name, usage, used, hard, over), code="forbidden"
            )
        amounts = {k: usage.get(k, 0) for k in CHARGED}
        after = {k: used[k] + amounts[k] for k in CHARGED}
        self.trigger_event(self.Charged, pod=pod, amounts=amounts, used=after, timestamp=at)

    def count(self, *, pod: str, usage: dict[str, int], reason: str, at: datetime) -> None:
        """Count a pod the ledger missed (it existed before the quota): recorded as it is,
        even beyond ``hard`` — recalculation reports usage, admission is what refuses."""
        self.require_exists()
        amounts = {k: usage.get(k, 0) for k in CHARGED}
        previous = self.charges.get(pod, {})
        after = {k: self.used.get(k, 0) - previous.get(k, 0) + amounts[k] for k in CHARGED}
        self.trigger_event(
            self.Charged, pod=pod, amounts=amounts, used=after, reason=reason, timestamp=at
        )

    def release(self, *, pod: str, reason: str, at: datetime) -> None:
        """Give back a pod's charge; releasing a pod that holds none changes nothing."""
        previous = self.charges.get(pod)
        if previous is None or not self.exists:
            return
        after = {k: self.used.get(k, 0) - previous.get(k, 0) for k in CHARGED}
        self.trigger_event(self.Released, pod=pod, reason=reason, used=after, timestamp=at)
