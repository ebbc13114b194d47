"""The exporter: holds the published snapshot, its cached exposition, the endpoint and the textfile.

Rule: publish() only swaps a reference, so the daemon loop never waits for a scrape; each
published snapshot is rendered at most once per format (and gzipped at most once), by the first
scrape or textfile write that needs it, and those bytes are served until the next publish.
"""

from __future__ import annotations

import gzip
import logging
import os
import socket
import ssl
import threading
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

from hwpoisond.metrics.exposition import (
    CONTENT_TYPES,
    OPENMETRICS,
    TEXT,
    PartRenderer,
    accepts_gzip,
    choose_format,
)
from hwpoisond.metrics.server import (
    DEFAULT_LIMITS,
    Limits,
    MetricsServer,
    Rejections,
    Request,
    Response,
    plain_response,
)
from hwpoisond.metrics.snapshot import EndpointHealth, MetricsSnapshot
from hwpoisond.metrics.textfile import write_textfile

if TYPE_CHECKING:
    from hwpoisond.config import MetricsConfig

#: gzip level for compressed scrapes: level 6 costs ~1 ms on a 76 KB exposition once per
#: snapshot and shrinks it ~10x; higher levels gain little on this repetitive text.
GZIP_LEVEL = 6
#: Connections the kernel queues for accept(2); they cost the kernel memory, not descriptors.
LISTEN_BACKLOG = 32
_LANDING_PAGE = (
    b"<!doctype html>\n<html><head><title>hwpoisond</title></head>"
    b'<body><h1>hwpoisond</h1><p><a href="/metrics">Metrics</a></p></body></html>\n'
)

log = logging.getLogger("hwpoisond")


class MetricsConfigError(OSError):
    """The endpoint cannot work with this configuration (an address that is not an address,
    unusable TLS files): retrying will not help. An OSError, so that `hwpoisond run` reports it
    in one line."""


class MetricsBindError(OSError):
    """The address and port cannot be bound now (taken, not yet configured on this host): the
    daemon runs without the endpoint and retries."""


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
        limits: Limits = DEFAULT_LIMITS,
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
        self.limits = limits
        self.rejections = Rejections()
        #: Why the endpoint is not listening (the address and port, errno and message), or None.
        self.bind_error: str | None = None
        self._listener: socket.socket | None = None
        self._tls: ssl.SSLContext | None = None
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
        """The TCP port the endpoint is bound to (the real one when `port=0`), else None."""
        if self._listener is None:
            return None
        return int(self._listener.getsockname()[1])

    @property
    def endpoint_up(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str | None:
        port = self.bound_port
        if port is None:
            return None
        scheme = "https" if self.tls_cert_file else "http"
        return f"{scheme}://{self._host()}:{port}/metrics"

    def _host(self) -> str:
        return f"[{self.listen_address}]" if ":" in self.listen_address else self.listen_address

    def start(self) -> None:
        """bind() then serve(): raises MetricsBindError or MetricsConfigError."""
        self.bind()
        self.serve()

    def bind(self) -> None:
        """Bind and listen (no-op without a port, or when bound already), so the daemon holds its
        port before the slow start-up work. Connections queue in the kernel until serve().
        Raises MetricsConfigError (not an address, unusable TLS files) or MetricsBindError
        (naming the address, port and errno; `bind_error` says the same)."""
        if self.port is None or self._listener is not None:
            return
        tls = self._tls_context()
        try:
            infos = socket.getaddrinfo(
                self.listen_address, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as e:
            raise MetricsConfigError(
                f"metrics.listen_address: got {self.listen_address!r}; expected an IP address "
                f"of this host ({e})"
            ) from e
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # As http.server does: a restart can bind again while old connections linger.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
        except OSError as e:
            sock.close()
            self.bind_error = (
                f"cannot bind the metrics endpoint to {self._host()}:{self.port}: "
                f"{e.strerror or e} (errno {e.errno})"
            )
            raise MetricsBindError(e.errno, self.bind_error) from e
        self.bind_error = None
        self._listener, self._tls = sock, tls

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        try:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        except OSError as e:  # ssl.SSLError included
            raise MetricsConfigError(
                f"metrics.tls_cert_file/tls_key_file: cannot load {self.tls_cert_file}, "
                f"{self.tls_key_file}: {e}"
            ) from e
        return tls

    def serve(self) -> None:
        """Answer on the bound socket from a daemon thread (no-op when not bound or serving)."""
        if self._listener is None or self._server is not None:
            return
        server = MetricsServer(
            self._listener, self._handle, self._tls, self.limits, self.rejections
        )
        wakeup = socket.socketpair()
        thread = threading.Thread(
            target=server.serve, args=(wakeup[0],), name="hwpoisond-metrics", daemon=True
        )
        thread.start()
        self._server, self._thread, self._wakeup = server, thread, wakeup

    def retry_bind(self) -> bool:
        """Try again to bind and serve after a MetricsBindError; True once the endpoint is up.
        Never raises: a failure only updates `bind_error`."""
        if self.port is None:
            return False
        if self._server is not None:
            return True
        try:
            self.bind()
        except MetricsBindError:
            return False
        except MetricsConfigError as e:  # e.g. the TLS files went away since the first bind
            self.bind_error = str(e)
            return False
        self.serve()
        log.warning("metrics endpoint bound at last: serving %s", self.url)
        return True

    def _handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return plain_response(HTTPStatus.NOT_IMPLEMENTED)
        send_body = request.method == "GET"
        if request.path == "/metrics":
            fmt = choose_format(request.headers.get("accept", ""))
            gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))
            headers = [("Content-Type", CONTENT_TYPES[fmt])]
            if gzipped:
                headers.append(("Content-Encoding", "gzip"))
            headers.append(("Vary", "Accept, Accept-Encoding"))
            return Response(HTTPStatus.OK, tuple(headers), self.exposition(fmt, gzipped), send_body)
        if request.path == "/":
            headers = [("Content-Type", "text/html; charset=utf-8")]
            return Response(HTTPStatus.OK, tuple(headers), _LANDING_PAGE, send_body)
        return replace(plain_response(HTTPStatus.NOT_FOUND), send_body=send_body)

    def publish(self, snapshot: MetricsSnapshot) -> None:
        """Make `snapshot` what scrapes see (the next scrape renders it); in textfile mode, also
        write it out. With an HTTP endpoint configured, the snapshot is stamped with its health
        (listening or not, connections refused) as of now."""
        if self.port is not None:
            health = EndpointHealth(
                up=self.endpoint_up,
                connections_rejected=tuple(sorted(self.rejections.counts().items())),
            )
            snapshot = replace(snapshot, endpoint=health)
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
        server, thread, wakeup, listener = self._server, self._thread, self._wakeup, self._listener
        self._server = self._thread = self._wakeup = self._listener = None
        if wakeup is not None:
            wakeup[1].send(b"\0")
        if thread is not None:
            thread.join(timeout=5.0)
        if server is not None:
            server.close()
        elif listener is not None:
            listener.close()
        if wakeup is not None:
            for end in wakeup:
                end.close()

    def __enter__(self) -> Exporter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
