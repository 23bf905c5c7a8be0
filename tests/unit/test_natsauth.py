"""What each identity may do on the embedded server (``streams.natsauth``), as written into the
server's configuration: pure, no server."""

from __future__ import annotations

from streams.identity import Credentials, generate_seed
from streams.natsauth import (
    MASTERS_GROUP,
    METRICS_PUBLISHERS_GROUP,
    SIM_LOAD_SUBJECT,
    NatsUser,
    Profile,
    authorization_config,
    metrics_namespaces_of,
    permissions,
    profile_of,
)


def _user(profile: Profile) -> NatsUser:
    return NatsUser(Credentials(generate_seed()).public_key, profile, "someone")


def test_a_user_publishes_only_commands_and_queries_and_never_manages_users() -> None:
    rules = permissions(_user(Profile.USER))
    assert rules["publish"]["allow"] == ["fleet.cmd.>", "fleet.qry.>"]
    assert rules["publish"]["deny"] == ["fleet.cmd.user.>", "fleet.qry.podconfig"]


def test_only_the_control_plane_asks_for_a_pods_secret_values() -> None:
    for profile in (Profile.USER, Profile.ADMIN):
        assert "fleet.qry.podconfig" in permissions(_user(profile))["publish"]["deny"]
    assert "deny" not in permissions(_user(Profile.CONTROL_PLANE))["publish"]


def test_a_user_subscribes_only_under_its_own_inbox_prefix() -> None:
    user = _user(Profile.USER)
    assert permissions(user)["subscribe"] == {"allow": [f"_INBOX_{user.public_key}.>"]}


def test_an_admin_reads_jetstream_but_cannot_change_or_delete_a_stream() -> None:
    allowed = permissions(_user(Profile.ADMIN))["publish"]["allow"]
    assert "$JS.API.DIRECT.GET.>" in allowed and "$JS.*.API.DIRECT.GET.>" in allowed
    assert "fleet.cmd.>" in allowed
    for forbidden in ("STREAM.DELETE", "STREAM.PURGE", "STREAM.UPDATE", "STREAM.CREATE"):
        assert not any(forbidden in subject for subject in allowed)
    assert not any(s.startswith(("$KV", "$O", "fleet.evt", ">")) for s in allowed)


def test_only_the_control_plane_may_publish_events() -> None:
    assert permissions(_user(Profile.CONTROL_PLANE))["publish"]["allow"] == [">"]


def test_system_masters_are_admins() -> None:
    assert profile_of(["dev", MASTERS_GROUP]) is Profile.ADMIN
    assert profile_of(["dev"]) is Profile.USER


def test_the_configuration_admits_exactly_the_users_given() -> None:
    users = [_user(Profile.USER), _user(Profile.CONTROL_PLANE)]
    text = authorization_config(users)
    assert text.startswith("authorization {")
    assert text.count('"nkey"') == 2
    assert all(u.public_key in text for u in users)


def test_metrics_publishers_get_their_namespaces_metric_subjects_and_admins_all() -> None:
    assert metrics_namespaces_of(["dev", f"{METRICS_PUBLISHERS_GROUP}:shop"]) == ("shop",)
    assert metrics_namespaces_of([f"{METRICS_PUBLISHERS_GROUP}:a", METRICS_PUBLISHERS_GROUP]) == (
        "*",
    )
    assert metrics_namespaces_of([f"{METRICS_PUBLISHERS_GROUP}:"]) == ()
    key = Credentials(generate_seed()).public_key
    shop = permissions(NatsUser(key, Profile.USER, "w", metrics=("shop",)))["publish"]["allow"]
    assert shop[2:] == ["fleet.metrics.custom.shop.>", "fleet.metrics.external.shop.>"]
    assert permissions(_user(Profile.USER))["publish"]["allow"] == ["fleet.cmd.>", "fleet.qry.>"]
    admin = permissions(_user(Profile.ADMIN))["publish"]["allow"]
    assert {"fleet.metrics.custom.>", "fleet.metrics.external.>", SIM_LOAD_SUBJECT} <= set(admin)


def test_the_node_agents_key_may_not_do_the_gateways_or_the_controllers_work() -> None:
    rules = permissions(_user(Profile.NODE))
    denied = rules["publish"]["deny"]
    for subject in (
        "fleet.evt.deployment.>",
        "fleet.evt.rolebinding.>",
        "fleet.audit.>",
        "fleet.cmd.user.>",
        "$JS.API.STREAM.DELETE.>",
        "$KV.fleet_leaders.>",
    ):
        assert subject in denied  # fmt: skip
    assert not any(s.startswith(("fleet.evt.pod.", "fleet.evt.node.")) for s in denied)
    assert rules["subscribe"]["deny"] == ["fleet.cmd.>", "fleet.qry.>"]
