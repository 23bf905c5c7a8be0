"""The cluster's address ranges (``core.network.ranges``) and the round-robin choice of a free
node range or pod address (``core.network.ipam``): the defaults, the arithmetic, and the
errors a person gets for a bad range. No server."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ValidationFailed
from core.network.ipam import next_free, next_node_range, next_pod_address
from core.network.ranges import (
    CLUSTER_DNS_IP,
    DEFAULT_CLUSTER_CIDR,
    DEFAULT_NODE_CIDR_MASK_SIZE,
    DEFAULT_NODE_PORT_RANGE,
    DEFAULT_SERVICE_CIDR,
    KUBERNETES_SERVICE_IP,
    ClusterCIDR,
    cidr_object_name,
    gateway,
    host_address,
    parse_address,
    parse_cidr,
    pod_address,
    pod_address_count,
    pod_address_index,
)

LAN_RANGES = [IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


def test_the_defaults_avoid_the_common_lan_ranges_and_each_other() -> None:
    cluster = IPv4Network(DEFAULT_CLUSTER_CIDR)
    services = IPv4Network(DEFAULT_SERVICE_CIDR)
    for lan in LAN_RANGES:
        assert not cluster.overlaps(lan) and not services.overlaps(lan)
    assert not cluster.overlaps(services)
    assert cluster.subnet_of(IPv4Network("100.64.0.0/10"))  # RFC 6598 shared address space
    assert IPv4Address(KUBERNETES_SERVICE_IP) in services
    assert IPv4Address(CLUSTER_DNS_IP) in services
    assert DEFAULT_NODE_CIDR_MASK_SIZE == 24 and DEFAULT_NODE_PORT_RANGE == (30000, 32767)


def test_the_default_cluster_cidr_gives_4096_node_ranges_of_253_pods() -> None:
    cluster = ClusterCIDR.parse()
    assert cluster.node_ranges == 4096
    assert cluster.node_range(0) == IPv4Network("100.96.0.0/24")
    assert cluster.node_range(1) == IPv4Network("100.96.1.0/24")
    assert cluster.node_range(4095) == IPv4Network("100.111.255.0/24")
    assert pod_address_count(cluster.node_range(0)) == 253


def test_the_nth_node_range_and_its_index_agree() -> None:
    cluster = ClusterCIDR.parse("100.96.0.0/16", 26)
    assert cluster.node_ranges == 1024
    assert cluster.node_range(5) == IPv4Network("100.96.1.64/26")
    assert cluster.index_of(IPv4Network("100.96.1.64/26")) == 5


@given(st.integers(min_value=0, max_value=4095))
def test_every_node_range_is_found_at_its_index(index: int) -> None:
    cluster = ClusterCIDR.parse()
    assert cluster.index_of(cluster.node_range(index)) == index


def test_a_node_range_has_its_gateway_first_then_its_pods() -> None:
    cidr = IPv4Network("100.96.3.0/24")
    assert host_address(cidr, 1) == gateway(cidr) == IPv4Address("100.96.3.1")
    assert pod_address(cidr, 0) == IPv4Address("100.96.3.2")
    assert pod_address(cidr, 252) == IPv4Address("100.96.3.254")  # .255 is the broadcast
    assert pod_address_index(cidr, IPv4Address("100.96.3.2")) == 0
    assert pod_address_index(cidr, IPv4Address("100.96.3.1")) is None  # the gateway
    assert pod_address_index(cidr, IPv4Address("100.96.4.2")) is None
    with pytest.raises(ValidationFailed, match="no pod address #253"):
        pod_address(cidr, 253)
    with pytest.raises(ValidationFailed, match="no host address #0"):
        host_address(cidr, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("100.96.0.0", "has no prefix length"),
        ("100.96.0.1/12", r"has host bits set: did you mean 100\.96\.0\.0/12\?"),
        ("not-a-cidr", "is not a CIDR"),
        ("100.96.0.0/33", "is not a CIDR"),
        ("fd00::/48", "IPv6 ranges are not supported yet"),
    ],
)
def test_a_bad_cidr_is_refused_with_what_to_do(text: str, message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        parse_cidr(text, what="cluster CIDR")


@pytest.mark.parametrize(
    ("cidr", "mask", "message"),
    [
        ("100.96.0.0/12", 8, r"between the cluster CIDR's prefix length \(12\) and 30"),
        ("100.96.0.0/12", 31, "between"),
        ("100.0.0.0/8", 28, r"2\^20 node ranges; at most 2\^16 .* at most 24"),
    ],
)
def test_a_bad_node_mask_size_is_refused(cidr: str, mask: int, message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        ClusterCIDR.parse(cidr, mask)


def test_a_stated_pod_cidr_must_be_a_node_range_of_the_cluster() -> None:
    cluster = ClusterCIDR.parse()
    assert cluster.check("100.96.7.0/24") == IPv4Network("100.96.7.0/24")
    with pytest.raises(ValidationFailed, match=r"outside the cluster CIDR 100\.96\.0\.0/12"):
        cluster.check("10.0.0.0/24")
    with pytest.raises(ValidationFailed, match="is a /25; this cluster gives each node a /24"):
        cluster.check("100.96.7.0/25")


def test_addresses_are_parsed_ipv4_only() -> None:
    assert parse_address("100.64.0.10") == IPv4Address(CLUSTER_DNS_IP)
    with pytest.raises(ValidationFailed, match="is not an IP address"):
        parse_address("100.64.0.300", what="clusterIP")
    with pytest.raises(ValidationFailed, match="IPv6"):
        parse_address("::1")


def test_a_range_object_is_named_after_its_range() -> None:
    assert cidr_object_name(IPv4Network("100.96.3.0/24")) == "100.96.3.0-24"


# -- choosing ------------------------------------------------------------------------------------


def test_the_next_free_slot_is_chosen_round_robin() -> None:
    assert next_free(4, set()) == 0
    assert next_free(4, {0, 1}) == 2
    assert next_free(4, {0}, after=2) == 3
    assert next_free(4, {3}, after=2) == 0  # wraps around
    assert next_free(4, {0, 1, 2, 3}) is None
    assert next_free(0, set()) is None


@given(
    size=st.integers(min_value=1, max_value=64),
    taken=st.sets(st.integers(min_value=0, max_value=63)),
    after=st.integers(min_value=-1, max_value=63),
)
def test_the_next_free_slot_is_free_and_none_is_skipped(
    size: int, taken: set[int], after: int
) -> None:
    chosen = next_free(size, taken, after=after)
    free = [i for i in range(size) if i not in taken]
    if not free:
        assert chosen is None
        return
    assert chosen is not None and chosen not in taken and 0 <= chosen < size
    # Nothing free lies between after+1 and the chosen slot (going round).
    step = (chosen - (after + 1)) % size
    skipped = {((after + 1) + k) % size for k in range(step)}
    assert not skipped & set(free)


def test_a_released_node_range_is_not_handed_out_again_at_once() -> None:
    cluster = ClusterCIDR.parse("100.96.0.0/22", 24)
    assert next_node_range(cluster, {0, 2}, after=1) == IPv4Network("100.96.3.0/24")
    assert next_node_range(cluster, {0, 1, 2, 3}) is None


def test_pod_addresses_come_round_robin_and_never_the_gateway() -> None:
    cidr = IPv4Network("100.96.0.0/29")  # .1 gateway, .2-.6 pods, .7 broadcast
    used = {IPv4Address("100.96.0.2")}
    assert next_pod_address(cidr, used) == IPv4Address("100.96.0.3")
    assert next_pod_address(cidr, set(), last=IPv4Address("100.96.0.4")) == IPv4Address(
        "100.96.0.5"
    )
    assert next_pod_address(cidr, set(), last=IPv4Address("100.96.0.6")) == IPv4Address(
        "100.96.0.2"
    )
    every = {IPv4Address(f"100.96.0.{i}") for i in range(2, 7)}
    assert next_pod_address(cidr, every) is None
