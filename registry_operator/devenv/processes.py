"""Child-process supervision for the dev cluster and local registry stacks.

Every child is started in its own process group with PR_SET_PDEATHSIG, so it dies with the Python
process even when that process is SIGKILLed: a failed or interrupted test run leaves no orphans.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. PDEATHSIG fires when the *thread* that forked exits,
    # so processes must be started from long-lived threads (the main thread in tests and `make run`).
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ManagedProcess:
    """One long-running child with its output in a log file."""

    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._exit_code: int | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._exit_code = None
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def poll(self) -> int | None:
        """None while it runs (or before it started); else its exit code, kept after stop()/kill()."""
        if self._proc is not None and (code := self._proc.poll()) is not None:
            self._exit_code = code
        return None if self.running() else self._exit_code

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            self._exit_code = proc.returncode if proc is not None else self._exit_code
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        self._exit_code = proc.returncode

    def kill(self) -> None:
        """SIGKILL, for tests that simulate a crash."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc is not None:
            self._exit_code = proc.returncode


class StartupError(RuntimeError):
    pass


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, process: ManagedProcess | None = None
) -> None:
    """Poll `check` every 100 ms; fail with the process's log tail when it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and not process.running():
            raise StartupError(f"{process.name} exited while waiting for {what}:\n{process.log_tail()}")
        try:
            if check():
                return
        except Exception:  # any failure just means "not yet"
            pass
        if time.monotonic() > deadline:
            tail = f":\n{process.log_tail()}" if process else ""
            raise StartupError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(0.1)
