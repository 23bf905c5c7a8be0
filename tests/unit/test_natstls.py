"""The local cluster's NATS certificates (``ops.natstls``) and how ``up`` hands their CA on:
made once and reused, remade for a new listen address from the same CA, named in the
context, passed to gateway children."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from core.meta.features import DEFAULT_FEATURES
from core.services.ranges import DEFAULT_RANGES
from ops.fleetconfig import FleetConfig, set_context, target
from ops.gateways import gateway_command
from ops.natstls import ServerTLS, ensure_local_tls


def sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} | set(
        names.get_values_for_type(x509.DNSName)
    )


def test_the_certificates_are_made_once_and_name_the_listen_address(tmp_path: Path) -> None:
    first = ensure_local_tls(tmp_path, host="10.1.2.3")
    assert sans(first.cert) == {"127.0.0.1", "localhost", "10.1.2.3"}
    assert first.ca is not None
    made = {p: p.read_bytes() for p in (first.ca, first.cert, first.key)}
    again = ensure_local_tls(tmp_path, host="10.1.2.3")
    assert {p: p.read_bytes() for p in (again.ca, again.cert, again.key)} == made  # type: ignore[union-attr]
    assert "tls {" in again.config() and str(first.cert.resolve()) in again.config()


def test_a_new_listen_address_gets_a_new_certificate_from_the_same_ca(tmp_path: Path) -> None:
    first = ensure_local_tls(tmp_path, host="127.0.0.1")
    ca, cert = first.ca.read_bytes(), first.cert.read_bytes()  # type: ignore[union-attr]
    moved = ensure_local_tls(tmp_path, host="192.0.2.7")
    assert moved.ca.read_bytes() == ca  # type: ignore[union-attr]
    assert moved.cert.read_bytes() != cert and "192.0.2.7" in sans(moved.cert)


def test_the_context_records_the_ca_and_a_plain_server_drops_it(tmp_path: Path) -> None:
    config, ca = FleetConfig(), tmp_path / "ca.crt"
    set_context(
        config, name="c", server="tls://127.0.0.1:4222", user="u", user_entry={"seed": "S"},
        certificate_authority=ca,
    )  # fmt: skip
    assert target(config, path=tmp_path / "cfg").certificate_authority == ca.resolve()
    set_context(config, name="c", server="nats://127.0.0.1:4222", user="u", user_entry={})
    assert target(config, path=tmp_path / "cfg").certificate_authority is None


def test_gateway_children_verify_the_server_with_ups_ca(tmp_path: Path) -> None:
    command = gateway_command(
        "tls://127.0.0.1:4222", features=DEFAULT_FEATURES, service_ranges=DEFAULT_RANGES,
        log_level="info", tls_ca=tmp_path / "ca.crt",
    )  # fmt: skip
    at = command.index("--tls-ca")
    assert command[at + 1] == str(tmp_path / "ca.crt") and at < command.index("gateway")


def test_up_serves_its_own_certificate_or_the_generated_one(tmp_path: Path) -> None:
    from ops.up import UpOptions

    own = UpOptions(
        data_dir=tmp_path, tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem",
        tls_ca=tmp_path / "ca.pem",
    )  # fmt: skip
    assert own.server_tls() == ServerTLS(
        tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    )
    generated = UpOptions(data_dir=tmp_path, tls=True).server_tls()
    assert generated is not None and generated.ca == tmp_path / "pki" / "nats" / "ca.crt"
    assert UpOptions(data_dir=tmp_path).server_tls() is None


def test_up_refuses_tls_options_that_do_not_go_together(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ops.cli import main

    cert = tmp_path / "c.pem"
    cert.write_text("x")
    runner = CliRunner()
    alone = runner.invoke(main, ["up", "--data-dir", str(tmp_path), "--tls-cert", str(cert)])
    assert alone.exit_code == 2 and "--tls-cert and --tls-key go together" in alone.output
    external = runner.invoke(main, ["up", "--nats-url", "nats://127.0.0.1:1", "--tls"])
    assert external.exit_code == 2 and "external server's TLS is its operator's" in external.output
