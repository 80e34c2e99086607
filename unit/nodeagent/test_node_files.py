"""The node agent's file rules, on a temporary host root: own only what it wrote, atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry_operator.nodeagent.files import (
    BLOCK_BEGIN,
    BLOCK_END,
    DnsMode,
    Layout,
    NodeFiles,
    RegistryTrust,
    host_dir_name,
    replace_block,
)

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def trust(
    host: str = "registry.ns.svc.cluster.local", ca: bytes = CA, ip: str | None = "10.0.0.5"
) -> RegistryTrust:
    return RegistryTrust(key="ns/registry", host=host, ca_pem=ca, cluster_ip=ip)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (tmp_path / "etc" / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    return tmp_path


def test_writes_containerd_and_containers_trust_and_a_hosts_block(root: Path) -> None:
    node = NodeFiles(Layout(root))
    result = node.sync([trust(host="registry.ns.svc.cluster.local:5000")])
    d = root / "etc/containerd/certs.d/registry.ns.svc.cluster.local:5000"
    assert (d / "ca.crt").read_bytes() == CA
    toml = (d / "hosts.toml").read_text()
    assert 'server = "https://registry.ns.svc.cluster.local:5000"' in toml and 'ca = "ca.crt"' in toml
    assert (root / "etc/containers/certs.d/registry.ns.svc.cluster.local:5000/ca.crt").read_bytes() == CA
    hosts = (root / "etc/hosts").read_text()
    assert (
        hosts == f"{BLOCK_BEGIN}\n10.0.0.5 registry.ns.svc.cluster.local\n{BLOCK_END}\n127.0.0.1 localhost\n"
    )
    assert result.changed and not result.conflicts
    assert (root / "etc/resolv.conf").read_text() == "nameserver 192.0.2.1\n"


def test_second_sync_writes_nothing_and_a_new_ca_replaces_only_ca_files(root: Path) -> None:
    NodeFiles(Layout(root)).sync([trust()])
    node = NodeFiles(Layout(root))  # a restarted agent reads its record
    assert not node.sync([trust()]).changed
    result = node.sync([trust(ca=CA.replace(b"MIIB", b"MIIC"))])
    assert sorted(p.name for p in result.written) == ["ca.crt", "ca.crt"]


def test_cleanup_removes_exactly_what_it_wrote(root: Path) -> None:
    other = root / "etc/containerd/certs.d/other.example"
    other.mkdir(parents=True)
    (other / "hosts.toml").write_text("users own this\n")
    before = files_under(root)
    node = NodeFiles(Layout(root))
    node.sync([trust()])
    node.cleanup()
    assert files_under(root) == before
    assert not (root / "var").exists()  # the state directory it created is gone too


def test_files_of_others_are_never_overwritten_or_removed(root: Path) -> None:
    d = root / "etc/containers/certs.d/registry.ns.svc.cluster.local"
    d.mkdir(parents=True)
    (d / "ca.crt").write_bytes(b"the admin's CA\n")
    node = NodeFiles(Layout(root))
    result = node.sync([trust()])
    assert (d / "ca.crt").read_bytes() == b"the admin's CA\n"
    assert any("is not the agent's" in c for c in result.conflicts)
    # A file of the agent's that someone edited afterwards is left alone on removal.
    mine = root / "etc/containerd/certs.d/registry.ns.svc.cluster.local/hosts.toml"
    mine.write_text("edited by hand\n")
    node.cleanup()
    assert mine.read_text() == "edited by hand\n"
    assert (d / "ca.crt").read_bytes() == b"the admin's CA\n"


def test_resolver_mode_puts_coredns_first_and_takes_it_out_again(root: Path) -> None:
    node = NodeFiles(Layout(root, dns_mode=DnsMode.RESOLVER, dns_server="10.96.0.10"))
    node.sync([trust()])
    assert (root / "etc/resolv.conf").read_text().splitlines()[1] == "nameserver 10.96.0.10"
    assert (root / "etc/hosts").read_text() == "127.0.0.1 localhost\n"
    node.cleanup()
    assert (root / "etc/resolv.conf").read_text() == "nameserver 192.0.2.1\n"


def test_replace_block_keeps_every_other_line_and_an_unterminated_block() -> None:
    text = f"a\n{BLOCK_BEGIN}\nold\n{BLOCK_END}\nb\n"
    assert replace_block(text, "new") == f"a\n{BLOCK_BEGIN}\nnew\n{BLOCK_END}\nb\n"
    assert replace_block(text, "") == "a\nb\n"
    broken = f"a\n{BLOCK_BEGIN}\nold\n"
    assert replace_block(broken, "new") == broken


@pytest.mark.parametrize("bad", ["", "a/b", "..", "a b"])
def test_host_names_that_would_escape_certs_d_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        host_dir_name(bad)
