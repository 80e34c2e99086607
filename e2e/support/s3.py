"""A real S3-compatible server on loopback: moto's standalone server (PyPI `moto[server]`, pinned in
hack/versions.env, installed into its own venv by hack/build-deps.sh).

Authentication is enforced: moto checks request signatures against the IAM access keys it issued
(after `INITIAL_NO_AUTH_ACTION_COUNT` bootstrap calls, which create the IAM user, its policy, its
key and the bucket). So a registry with a wrong or missing key is refused, as by real S3.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from registry_operator.devenv import binaries
from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until

REGION = "us-east-1"
# create_user, put_user_policy, create_access_key, create_bucket: then every request must be signed.
_BOOTSTRAP_CALLS = 4

_BOOTSTRAP = """
import json, sys, boto3
url, bucket = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="bootstrap",
          aws_secret_access_key="bootstrap")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="registry")
policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
iam.put_user_policy(UserName="registry", PolicyName="s3", PolicyDocument=json.dumps(policy))
key = iam.create_access_key(UserName="registry")["AccessKey"]
boto3.client("s3", **kw).create_bucket(Bucket=bucket)
print(json.dumps({"accessKeyId": key["AccessKeyId"], "secretAccessKey": key["SecretAccessKey"]}))
"""

_LIST = """
import json, sys, boto3
url, bucket, key_id, secret = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key_id,
                  aws_secret_access_key=secret)
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    keys += [item["Key"] for item in page.get("Contents", [])]
print(json.dumps(keys))
"""


@dataclass
class MotoS3:
    """`moto_server` on 127.0.0.1 with one bucket and one access key allowed to use it."""

    workdir: Path
    bucket: str = "images"
    port: int = field(default_factory=free_port)
    access_key_id: str = ""
    secret_access_key: str = ""
    _process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def _python(self) -> Path:
        return binaries.ensure("moto")["moto"].path("venv/bin/python")

    def start(self) -> MotoS3:
        self.workdir.mkdir(parents=True, exist_ok=True)
        server = binaries.ensure("moto")["moto"].path("moto_server")
        env = {"INITIAL_NO_AUTH_ACTION_COUNT": str(_BOOTSTRAP_CALLS), "PATH": "/usr/bin:/bin"}
        self._process = ManagedProcess(
            "moto", [str(server), "-H", "127.0.0.1", "-p", str(self.port)], self.workdir, env
        )
        self._process.start()

        def answering() -> bool:
            try:
                # moto's own status endpoint: no signature needed, not counted as an action.
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2)
            except OSError:
                return False
            return True

        wait_until("moto S3 server", answering, 60, self._process)
        keys = json.loads(self._run(_BOOTSTRAP, self.endpoint, self.bucket))
        self.access_key_id, self.secret_access_key = keys["accessKeyId"], keys["secretAccessKey"]
        return self

    def keys(self, prefix: str = "") -> list[str]:
        """Object keys in the bucket (a signed request with the registry's key)."""
        listed = self._run(_LIST, self.endpoint, self.bucket, self.access_key_id, self.secret_access_key)
        return [key for key in json.loads(listed) if key.startswith(prefix)]

    def _run(self, script: str, *args: str) -> str:
        done = subprocess.run(
            [str(self._python), "-c", script, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def log(self) -> str:
        return self._process.log_tail(40) if self._process else ""

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
