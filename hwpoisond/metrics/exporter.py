"""The exporter: holds the published snapshot, its cached exposition, the endpoint and the textfile.

Rule: publish() only swaps a reference, so the daemon loop never waits for a scrape; each
published snapshot is rendered at most once per format (and gzipped at most once), by the first
scrape or textfile write that needs it, and those bytes are served until the next publish.
"""

from __future__ import annotations

import gzip
import os
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hwpoisond.metrics.exposition import OPENMETRICS, TEXT, PartRenderer
from hwpoisond.metrics.server import MetricsServer, serve
from hwpoisond.metrics.snapshot import MetricsSnapshot
from hwpoisond.metrics.textfile import write_textfile

if TYPE_CHECKING:
    from hwpoisond.config import MetricsConfig

#: gzip level for compressed scrapes: level 6 costs ~1 ms on a 76 KB exposition once per
#: snapshot and shrinks it ~10x; higher levels gain little on this repetitive text.
GZIP_LEVEL = 6


@dataclass(frozen=True, slots=True)
class _Rendered:
    """One snapshot's expositions, rendered once each and served to every scrape until the next
    publish: key (format, gzipped)."""

    snapshot: MetricsSnapshot
    bodies: dict[tuple[str, bool], bytes] = field(default_factory=dict)


class Exporter:
    """Serves the current snapshot over HTTP and/or writes it to a textfile directory.

    `port=None` disables HTTP (textfile only); `port=0` binds a free port (see `bound_port`).
    TLS (Python's `ssl` module) needs both `tls_cert_file` and `tls_key_file`.
    """

    def __init__(
        self,
        *,
        listen_address: str = "127.0.0.1",
        port: int | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        textfile_dir: str | os.PathLike[str] | None = None,
        snapshot: MetricsSnapshot | None = None,
    ) -> None:
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be given together")
        self.listen_address = listen_address
        self.port = port
        self.tls_cert_file = tls_cert_file
        self.tls_key_file = tls_key_file
        self.textfile_dir = Path(textfile_dir) if textfile_dir is not None else None
        # Both are replaced whole, never mutated once visible: a reference read is atomic under
        # the GIL, so a scrape sees one snapshot's exposition, never a mix of two.
        self._snapshot = snapshot or MetricsSnapshot()
        self._rendered: _Rendered | None = None
        self._renderer = PartRenderer()  # used under _render_lock only
        self._render_lock = threading.Lock()
        self._server: MetricsServer | None = None
        self._thread: threading.Thread | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._textfile_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: MetricsConfig) -> Exporter:
        return cls(
            listen_address=config.listen_address,
            port=config.port if config.enabled else None,
            tls_cert_file=config.tls_cert_file,
            tls_key_file=config.tls_key_file,
            textfile_dir=config.textfile_dir,
        )

    @property
    def snapshot(self) -> MetricsSnapshot:
        return self._snapshot

    @property
    def bound_port(self) -> int | None:
        """The TCP port the HTTP server listens on (the real one when `port=0`), else None."""
        if self._server is None:
            return None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str | None:
        port = self.bound_port
        if port is None:
            return None
        scheme = "https" if self.tls_cert_file else "http"
        host = f"[{self.listen_address}]" if ":" in self.listen_address else self.listen_address
        return f"{scheme}://{host}:{port}/metrics"

    def start(self) -> None:
        """Bind and serve in a daemon thread (no-op without a port). Raises OSError when the
        address cannot be bound, ssl.SSLError/OSError when the TLS files are unusable."""
        if self.port is None or self._server is not None:
            return
        tls = None
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        family = socket.getaddrinfo(
            self.listen_address, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0][0]
        server = MetricsServer((self.listen_address, self.port), family, self.exposition, tls)
        server.socket.setblocking(False)
        server.timeout = 0
        wakeup = socket.socketpair()
        thread = threading.Thread(
            target=serve, args=(server, wakeup[0]), name="hwpoisond-metrics", daemon=True
        )
        thread.start()
        self._server, self._thread, self._wakeup = server, thread, wakeup

    def publish(self, snapshot: MetricsSnapshot) -> None:
        """Make `snapshot` what scrapes see (the next scrape renders it); in textfile mode, also
        write it out."""
        self._snapshot = snapshot
        if self.textfile_dir is not None:
            self.write_textfile()

    def render(self) -> bytes:
        """The exposition text of the current snapshot (Prometheus text format 0.0.4)."""
        return self.exposition(TEXT, False)

    def exposition(self, fmt: str, gzipped: bool) -> bytes:
        """The current snapshot's exposition in `fmt` (TEXT or OPENMETRICS), gzipped or not:
        rendered at most once per publish, then served from the cache."""
        key = (fmt, gzipped)
        rendered = self._rendered
        if rendered is not None and rendered.snapshot is self._snapshot:
            body = rendered.bodies.get(key)
            if body is not None:
                return body
        # One renderer at a time: scrapes racing after a publish wait for the first one's
        # result instead of each rendering the same snapshot.
        with self._render_lock:
            rendered = self._rendered
            snapshot = self._snapshot
            if rendered is None or rendered.snapshot is not snapshot:
                rendered = _Rendered(snapshot)
            bodies = dict(rendered.bodies)
            if (fmt, False) not in bodies:
                render = (
                    self._renderer.render_openmetrics
                    if fmt == OPENMETRICS
                    else self._renderer.render
                )
                bodies[(fmt, False)] = render(snapshot)
            if gzipped and key not in bodies:
                bodies[key] = gzip.compress(bodies[(fmt, False)], GZIP_LEVEL, mtime=0)
            # A new record, not a mutated one: a scrape reading the old record concurrently
            # never sees it change under it.
            self._rendered = _Rendered(snapshot, bodies)
            return bodies[key]

    def write_textfile(self) -> Path:
        """Write the exposition to `<textfile_dir>/hwpoisond.prom` atomically."""
        if self.textfile_dir is None:
            raise ValueError("no textfile directory configured")
        data = self.render()
        with self._textfile_lock:
            return write_textfile(self.textfile_dir, data)

    def stop(self) -> None:
        """Stop serving and release the port at once (no poll interval to wait out)."""
        server, thread, wakeup = self._server, self._thread, self._wakeup
        self._server = self._thread = self._wakeup = None
        if wakeup is not None:
            wakeup[1].send(b"\0")
        if thread is not None:
            thread.join(timeout=5.0)
        if server is not None:
            server.server_close()
        if wakeup is not None:
            for end in wakeup:
                end.close()

    def __enter__(self) -> Exporter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
