"""A pod's resolv.conf as the kubelet decides it: dnsPolicy, dnsConfig merging, limits."""

from __future__ import annotations

from typing import Any

from core.dns.resolvconf import ResolvConf, parse, pod_dns

HOST = parse(
    "# generated\n"
    "nameserver 192.0.2.53\n"
    "nameserver 192.0.2.54\n"
    "search corp.example. lab.example\n"
    "options timeout:2 attempts:3\n"
)


def decide(spec: dict[str, Any], *, cluster_dns: tuple[str, ...] = ("100.64.0.10",)) -> Any:
    return pod_dns(
        spec, namespace="shop", host=HOST, cluster_dns=cluster_dns,
        cluster_domain="cluster.local",
    )  # fmt: skip


def test_the_node_file_is_read_as_the_kubelet_reads_it() -> None:
    assert (
        ResolvConf(
            nameservers=("192.0.2.53", "192.0.2.54"),
            searches=("corp.example", "lab.example"),
            options=("timeout:2", "attempts:3"),
        )
        == HOST
    )
    later = parse("search a\n; comment\nsearch b c\noptions x\noptions y\nnameserver\n")
    assert later == ResolvConf((), ("b", "c"), ("y",))


def test_cluster_first_names_the_cluster_dns_and_searches_the_namespace_first() -> None:
    dns = decide({})
    assert not dns.host_file and dns.warnings == ()
    assert dns.conf.text() == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n"
        "nameserver 100.64.0.10\n"
        "options ndots:5\n"
    )


def test_host_network_pods_keep_the_node_file_unless_cluster_first_with_host_net() -> None:
    assert decide({"hostNetwork": True}).host_file
    assert decide({"hostNetwork": True}).conf == HOST
    with_cluster = decide({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"})
    assert not with_cluster.host_file
    assert with_cluster.conf.nameservers == ("100.64.0.10",)
    # On a pod network, ClusterFirstWithHostNet is ClusterFirst.
    assert decide({"dnsPolicy": "ClusterFirstWithHostNet"}).conf == decide({}).conf


def test_default_is_the_node_file_and_none_only_dns_config() -> None:
    assert decide({"dnsPolicy": "Default"}).conf == HOST
    none = decide(
        {
            "dnsPolicy": "None",
            "dnsConfig": {
                "nameservers": ["192.0.2.1"],
                "searches": ["my.dns.search.suffix"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
            },
        }
    )
    assert none.conf.text() == (
        "search my.dns.search.suffix\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
    )
    assert not none.host_file


def test_dns_config_merges_into_cluster_first_without_duplicates() -> None:
    dns = decide(
        {
            "dnsConfig": {
                "nameservers": ["100.64.0.10", "192.0.2.9"],
                "searches": ["svc.cluster.local", "extra.example"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "single-request"}],
            }
        }
    )
    assert dns.conf.nameservers == ("100.64.0.10", "192.0.2.9")
    assert dns.conf.searches[-1] == "extra.example"
    assert dns.conf.searches.count("svc.cluster.local") == 1
    assert dns.conf.options == ("ndots:1", "single-request")


def test_a_node_without_cluster_dns_falls_back_to_default_with_a_warning() -> None:
    dns = decide({}, cluster_dns=())
    assert dns.conf == HOST and dns.host_file
    assert "falling back" in dns.warnings[0]


def test_limits_cut_nameservers_and_search_domains_with_warnings() -> None:
    many = decide(
        {
            "dnsPolicy": "None",
            "dnsConfig": {
                "nameservers": [f"192.0.2.{i}" for i in range(1, 6)],
                "searches": [f"d{i}.example" for i in range(40)] + ["x" * 254],
            },
        }
    )
    assert many.conf.nameservers == ("192.0.2.1", "192.0.2.2", "192.0.2.3")
    assert len(many.conf.searches) == 32
    assert len(many.warnings) == 2
    long = decide({"dnsPolicy": "None", "dnsConfig": {"searches": ["y" * 250] * 1 + [
        f"{i}" + "z" * 240 for i in range(10)
    ]}})  # fmt: skip
    assert len(" ".join(long.conf.searches)) <= 2048 and long.warnings
