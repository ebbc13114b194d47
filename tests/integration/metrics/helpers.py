"""Helpers for the metrics integration tests: HTTP GET, free loopback ports, waiting for a
server that a subprocess is starting."""

from __future__ import annotations

import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5, context=context) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, deadline_seconds: float = 10.0) -> str:
    end = time.monotonic() + deadline_seconds
    while True:
        try:
            return get(url)[2]
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > end:
                raise
            time.sleep(0.05)
