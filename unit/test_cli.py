"""The operator's command line: configuration mistakes end in one clear line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registry_operator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "POD_NAMESPACE": "registry-operator", **(env or {})},
        check=False,
    )


def test_version_prints_the_package_version() -> None:
    from registry_operator import __version__

    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.strip() == __version__


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OPERATOR_SECRET_TTL", "banana"),
        ("OPERATOR_SECRET_TTL", "0s"),
        ("WATCH_NAMESPACE", "Not_A_Namespace"),
        ("OPERATOR_DNS_ZONE", "UPPER..case"),
    ],
)
def test_invalid_setting_exits_with_one_line_naming_the_variable(variable: str, value: str) -> None:
    result = run_cli("run", env={variable: value})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert lines[0].startswith("registry-operator: ")


def test_unknown_controller_is_refused_with_the_known_names() -> None:
    result = run_cli("run", "--controllers=caroot,nonsense")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "nonsense" in result.stderr
    assert "imageregistry" in result.stderr


def test_controller_selection() -> None:
    from registry_operator.controllers import CONTROLLERS, UnknownControllerError, select

    assert select("*") == list(CONTROLLERS)
    assert select("imagesecret,caroot") == ["caroot", "imagesecret"]  # registry order
    assert select("*,-imagebuildenv") == [n for n in CONTROLLERS if n != "imagebuildenv"]
    assert select("") == []
    with pytest.raises(UnknownControllerError):
        select("-bogus")
