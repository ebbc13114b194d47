"""Runs the real daemon as a subprocess with a real sd_notify socket, for integration tests.

Rule: test support only; it starts `python -m hwpoisond run` exactly as systemd would and records
every datagram the daemon sends to NOTIFY_SOCKET.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType


class DaemonProcess:
    def __init__(
        self,
        tmp_path: Path,
        root: Path,
        state_dir: Path,
        config: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        module: str = "hwpoisond",
    ) -> None:
        self.notify_path = tmp_path / f"notify-{time.monotonic_ns()}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.notify_path))
        self.messages: list[str] = []
        self.stderr_path = tmp_path / f"daemon-{time.monotonic_ns()}.stderr"
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "WATCHDOG_USEC")}
        env["NOTIFY_SOCKET"] = str(self.notify_path)
        env.update(extra_env or {})
        # `module` runs the same CLI under a test wrapper (tests/integration/synckernel.py).
        cmd = [sys.executable, "-m", module, "run", "--root", str(root)]
        cmd += ["--state-dir", str(state_dir)]
        if config is not None:
            cmd += ["--config", str(config)]
        cmd += list(args)
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, env=env, stderr=self._stderr, stdout=subprocess.DEVNULL)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_message(self, needle: str, timeout: float = 10.0) -> str:
        """Receive datagrams until one contains `needle`; returns it."""
        deadline = time.monotonic() + timeout
        for msg in self.messages:
            if needle in msg:
                return msg
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            msg = data.decode()
            self.messages.append(msg)
            if needle in msg:
                return msg
        raise AssertionError(
            f"no notify message with {needle!r} within {timeout}s; got {self.messages}; "
            f"exit={self.proc.poll()} stderr:\n{self.stderr()}"
        )

    def wait_ready(self, timeout: float = 10.0) -> str:
        return self.wait_for_message("READY=1", timeout)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        self._stderr.close()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
