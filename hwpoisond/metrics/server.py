"""The metrics HTTP(S) endpoint: GET/HEAD /metrics from a thread, never the daemon loop.

Rule: the server only answers with bytes the exporter hands it; it reads no snapshot, kernel file
or database itself, and a client can hold it up for a bounded time only.
"""

from __future__ import annotations

import logging
import selectors
import socket
import socketserver
import ssl
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hwpoisond import __version__
from hwpoisond.metrics.exposition import CONTENT_TYPES, accepts_gzip, choose_format

#: A client that sends no complete request (or reads no response) within this long is dropped,
#: so a stuck or hostile client ties up one handler thread for a bounded time only.
CLIENT_TIMEOUT_SECONDS = 10.0
_LANDING_PAGE = (
    b"<!doctype html>\n<html><head><title>hwpoisond</title></head>"
    b'<body><h1>hwpoisond</h1><p><a href="/metrics">Metrics</a></p></body></html>\n'
)


class MetricsHandler(BaseHTTPRequestHandler):
    """GET/HEAD `/metrics` (and a landing page at `/`); 404 elsewhere; other methods get 501
    from BaseHTTPRequestHandler itself. HTTP/1.0: one request per connection."""

    server_version = f"hwpoisond/{__version__}"
    sys_version = ""
    timeout = CLIENT_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            server = self.server
            assert isinstance(server, MetricsServer)
            fmt = choose_format(self.headers.get("Accept", ""))
            gzipped = accepts_gzip(self.headers.get("Accept-Encoding", ""))
            body = server.exposition(fmt, gzipped)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", CONTENT_TYPES[fmt])
            if gzipped:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Vary", "Accept, Accept-Encoding")
        elif path == "/":
            body = _LANDING_PAGE
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
        else:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # A scrape every 15 s would flood the journal; failures show up as Prometheus' `up`.
        pass


class MetricsServer(ThreadingHTTPServer):
    """A thread per connection (daemon threads: stop() never waits for a client); with TLS, the
    handshake runs in that thread too, so a slow handshake never holds up accepting."""

    def __init__(
        self,
        address: tuple[str, int],
        address_family: socket.AddressFamily,
        exposition: Callable[[str, bool], bytes],
        tls: ssl.SSLContext | None,
    ) -> None:
        self.address_family = address_family
        self.exposition = exposition
        self.tls = tls
        super().__init__(address, MetricsHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that hangs up mid-response (BrokenPipe, reset) is not our error, and
        # socketserver's default would print a traceback to stderr for every one.
        logging.getLogger("hwpoisond").debug(
            "metrics client %s went away mid-request", client_address, exc_info=True
        )

    def server_bind(self) -> None:
        # HTTPServer.server_bind() also resolves the host's FQDN (a DNS query at start) for a
        # name we never use; binding is all we need.
        socketserver.TCPServer.server_bind(self)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(CLIENT_TIMEOUT_SECONDS)
        try:
            tls_request = self.tls.wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError included: plain HTTP on the TLS port, a failed handshake
            return
        try:
            super().finish_request(tls_request, client_address)
        finally:
            # wrap_socket() took over the descriptor: shutdown_request() only sees the empty
            # plain socket, so the TLS one is closed here.
            tls_request.close()


def serve(server: MetricsServer, wakeup: socket.socket) -> None:
    """Accept until `wakeup` becomes readable. socketserver's serve_forever() polls for shutdown
    every poll_interval (0.5 s); waiting on a wakeup socket instead makes stop() immediate and
    costs no wakeups while idle."""
    with selectors.DefaultSelector() as selector:
        selector.register(server.socket, selectors.EVENT_READ)
        selector.register(wakeup, selectors.EVENT_READ)
        while True:
            ready = {key.fileobj for key, _ in selector.select()}
            if wakeup in ready:
                return
            # The listening socket is non-blocking and server.timeout is 0: a connection that
            # vanished between select() and accept() costs one EAGAIN, never a blocked loop.
            server.handle_request()
