"""The garbage collector's command (as the operator puts it in the Job) on a filesystem volume, with
the real registry: the report's counts and the bytes freed, measured with busybox `du` as in the
stock registry image. (The operator's run and S3 are in controllers/test_imageregistry_storage.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import bcrypt
import yaml

from e2e.support.oci import write_image
from e2e.support.registry import LocalRegistry, skopeo
from registry_operator.api.imageregistry import GarbageCollectionSpec, ImageRegistrySpec
from registry_operator.controllers.imageregistry.garbagecollection import gc_command, parse_report
from registry_operator.devenv import binaries
from registry_operator.devenv.certs import issue_cert

SPEC = ImageRegistrySpec.model_validate(
    {"persistentVolumeClaim": {"resources": {"requests": {"storage": 1}}}}
)


def test_collector_command_reports_deleted_blobs_and_freed_bytes_on_a_volume(tmp_path: Path) -> None:
    ca = issue_cert("e2e-gc-ca")
    server = issue_cert("127.0.0.1", issuer=ca, server_names=("127.0.0.1",))
    for name, data in {
        "ca.crt": ca.cert_pem(),
        "tls.crt": server.cert_pem(),
        "tls.key": server.key_pem(),
    }.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_bytes(ca.cert_pem())
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"ci:{bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode()}\n")
    # 1 MiB that gzip cannot shrink, so the freed size stands well above du's KiB rounding.
    big = os.urandom(1 << 20)
    layouts = {"v1": tmp_path / "v1", "v2": tmp_path / "v2"}
    digests = {"v1": write_image(layouts["v1"], "v1", big), "v2": write_image(layouts["v2"], "v2", b"s\n")}
    v1_bytes = sum(path.stat().st_size for path in (layouts["v1"] / "blobs" / "sha256").iterdir())
    registry = LocalRegistry(
        tmp_path,
        tls_cert=tmp_path / "tls.crt",
        tls_key=tmp_path / "tls.key",
        ca_cert=tmp_path / "ca.crt",
        auth={"htpasswd": {"realm": "e2e", "path": str(htpasswd)}},
    )
    creds = ["--dest-creds", "ci:pw", "--dest-cert-dir", str(tmp_path / "certs")]
    with registry:
        for tag, layout in layouts.items():
            ref = f"docker://{registry.address}/team/app:{tag}"
            pushed = skopeo("copy", *creds, f"oci:{layout}:{tag}", ref)
            assert pushed.returncode == 0, pushed.stderr
        deleted = skopeo(
            "delete", "--creds", "ci:pw", "--cert-dir", str(tmp_path / "certs"),
            f"docker://{registry.address}/team/app@{digests['v1']}",
        )  # fmt: skip
        assert deleted.returncode == 0, deleted.stderr

    # The Job's command: only the config path and the volume path point at the local copies.
    command = gc_command(SPEC, GarbageCollectionSpec(schedule="@daily"))
    assert command[-2:] == ["/etc/distribution/config.yml", "/var/lib/registry"]
    registry_yml = tmp_path / "registry.yml"
    assert yaml.safe_load(registry_yml.read_text())["storage"]["delete"] == {"enabled": True}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "registry").symlink_to(binaries.ensure("registry")["registry"].path("registry"))
    busybox = shutil.which("busybox")
    assert busybox, "busybox is required: hack/build-deps.sh debian-tools"
    for tool in ("du", "cut", "grep", "sed", "tail", "cat"):
        (bin_dir / tool).symlink_to(busybox)
    report_file = tmp_path / "termination-log"
    argv = [busybox, "sh", *command[1:4], str(registry_yml), str(tmp_path / "data")]
    env = {"PATH": str(bin_dir), "TERMINATION_LOG": str(report_file), "OTEL_TRACES_EXPORTER": "none"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = parse_report(report_file.read_text())
    print(f"collector report: {report_file.read_text()!r}")
    assert (report.exit_code, report.blobs_deleted, report.manifests_deleted) == (0, 3, 0)
    # The three blobs, plus the directories that held them (du counts allocated blocks).
    assert report.bytes_freed is not None
    assert v1_bytes <= report.bytes_freed <= v1_bytes + 64 * 1024, (report.bytes_freed, v1_bytes)
    blobs = tmp_path / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    assert not (blobs / digests["v1"][7:9] / digests["v1"][7:]).exists()
    assert (blobs / digests["v2"][7:9] / digests["v2"][7:]).exists()
    index = json.loads((layouts["v2"] / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digests["v2"]
