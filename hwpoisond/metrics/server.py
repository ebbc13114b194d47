"""The metrics HTTP(S) endpoint: one thread, one selector, every client bounded.

Rule: a client costs at most one file descriptor, `max_head_bytes` of buffer and
`deadline_seconds` of wall time from accept to close (a total, not per read); no more than
`max_connections` exist at once, and a client never takes one of the `fd_reserve` descriptors
below RLIMIT_NOFILE that the daemon keeps for its own work. Whatever goes beyond is refused at
once and counted by reason, never queued in memory. The server answers only with what its
handler returns; it reads no snapshot, kernel file or database itself.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

from hwpoisond import __version__

log = logging.getLogger("hwpoisond")

#: Why a connection was refused or cut (the `reason` label of
#: hwpoisond_metrics_connections_rejected_total).
REJECT_REASONS = (
    "too_many_connections",  # max_connections already open
    "fd_reserve",  # accepting would eat into the descriptors kept for the daemon
    "fd_limit",  # accept(2) failed with EMFILE/ENFILE: the process is out of descriptors
    "deadline",  # no complete request read and answered within deadline_seconds
    "header_too_large",  # request line and headers beyond max_head_bytes
    "too_many_headers",  # more than max_headers header lines
    "bad_request",  # not an HTTP/1.x request
    "tls_handshake",  # the TLS handshake failed (plain HTTP on the TLS port, say)
)
_RECV_BYTES = 4096
_SERVER_HEADER = f"hwpoisond/{__version__}"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client, and all of them together, may cost."""

    max_connections: int = 16
    deadline_seconds: float = 10.0
    max_head_bytes: int = 8192
    max_headers: int = 32
    #: Descriptors below RLIMIT_NOFILE's soft limit that a client never gets: a due soft offline
    #: needs a descriptor to write soft_offline_page, and the store one for its journal.
    fd_reserve: int = 64
    #: After accept(2) fails for lack of descriptors the listener rests this long: retrying at
    #: once would spin (it stays readable) and burn a core.
    accept_pause_seconds: float = 0.25


class Rejections:
    """Refused connections by reason. Written by the server thread only; every reason exists
    from the start, so a reader in another thread never sees the dict change size."""

    def __init__(self) -> None:
        self._counts = dict.fromkeys(REJECT_REASONS, 0)

    def add(self, reason: str) -> None:
        self._counts[reason] += 1

    def counts(self) -> dict[str, int]:
        return dict(self._counts)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    #: The request target without its query string.
    path: str
    #: Header names in lower case; repeated headers joined with ", ".
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Response:
    status: HTTPStatus
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: False for HEAD: the headers (Content-Length included) of GET, no body.
    send_body: bool = True


Handler = Callable[[Request], Response]
DEFAULT_LIMITS = Limits()


def plain_response(status: HTTPStatus) -> Response:
    body = f"{status.value} {status.phrase}\n".encode()
    return Response(status, (("Content-Type", "text/plain; charset=utf-8"),), body)


class _Conn:
    __slots__ = ("buf", "deadline", "handshaking", "out", "sock")

    def __init__(self, sock: socket.socket, deadline: float, handshaking: bool) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = bytearray()
        self.out: list[memoryview] | None = None  # set once the request is answered
        self.handshaking = handshaking


def _head_end(buf: bytearray) -> int:
    """The length of the request head (blank line included), or -1 while it is incomplete."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := buf.find(sep)) >= 0]
    return min(ends) if ends else -1


def parse_head(head: bytes, max_headers: int) -> Request | tuple[HTTPStatus, str]:
    """An HTTP/1.x request head as a Request, or (error status, rejection reason)."""
    lines = head.decode("iso-8859-1").split("\n")
    words = lines[0].strip().split()
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        return HTTPStatus.BAD_REQUEST, "bad_request"
    method, target, version = words
    if not version.startswith("HTTP/1."):
        return HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "bad_request"
    fields = [line.rstrip("\r") for line in lines[1:]]
    fields = [f for f in fields if f]
    if len(fields) > max_headers:
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too_many_headers"
    headers: dict[str, str] = {}
    for f in fields:
        name, sep, value = f.partition(":")
        if not sep or not name or name != name.strip():
            return HTTPStatus.BAD_REQUEST, "bad_request"
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return Request(method, target.split("?", 1)[0], headers)


def _response_bytes(response: Response) -> list[memoryview]:
    lines = [
        f"HTTP/1.0 {response.status.value} {response.status.phrase}",
        f"Server: {_SERVER_HEADER}",
        f"Date: {formatdate(usegmt=True)}",
        *(f"{k}: {v}" for k, v in response.headers),
        f"Content-Length: {len(response.body)}",
        "Connection: close",
    ]
    head = memoryview(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return [head, memoryview(response.body)] if response.send_body else [head]


def _fd_soft_limit() -> int | None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


class MetricsServer:
    """Serves `handler` on an already bound, listening socket until `serve()`'s wakeup socket
    becomes readable; all in the thread that calls serve()."""

    def __init__(
        self,
        listener: socket.socket,
        handler: Handler,
        tls: ssl.SSLContext | None = None,
        limits: Limits = DEFAULT_LIMITS,
        rejections: Rejections | None = None,
    ) -> None:
        listener.setblocking(False)
        self.listener = listener
        self.server_address: tuple[str, int] = listener.getsockname()[:2]
        self.handler = handler
        self.tls = tls
        self.limits = limits
        self.rejections = rejections or Rejections()
        self._conns: dict[int, _Conn] = {}
        self._selector: selectors.BaseSelector | None = None
        self._accept_paused_until: float | None = None

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def serve(self, wakeup: socket.socket) -> None:
        """Accept and answer until `wakeup` is readable, then close every connection and the
        listener. Waits on the selector only: no wake-ups while idle."""
        selector = self._selector = selectors.DefaultSelector()
        selector.register(wakeup, selectors.EVENT_READ, "wakeup")
        selector.register(self.listener, selectors.EVENT_READ, "listener")
        try:
            while True:
                for key, mask in selector.select(self._timeout(time.monotonic())):
                    if key.data == "wakeup":
                        return
                    if key.data == "listener":
                        self._accept()
                    else:
                        self._service(key.data, mask)
                self._expire(time.monotonic())
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            selector.close()
            self._selector = None
            self.listener.close()

    def close(self) -> None:
        """Release the port when serve() never ran (it closes everything itself)."""
        if self._selector is None:
            self.listener.close()

    # -- the loop's pieces ------------------------------------------------------------------------

    def _timeout(self, now: float) -> float | None:
        due = [c.deadline for c in self._conns.values()]
        if self._accept_paused_until is not None:
            due.append(self._accept_paused_until)
        return max(0.0, min(due) - now) if due else None

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self.rejections.add("deadline")
            self._close(conn)
        paused = self._accept_paused_until
        if paused is not None and paused <= now and self._selector is not None:
            self._accept_paused_until = None
            self._selector.register(self.listener, selectors.EVENT_READ, "listener")

    def _accept(self) -> None:
        assert self._selector is not None
        # Bounded: a flood of connections cannot keep this loop from serving the others.
        for _ in range(self.limits.max_connections + 16):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.rejections.add("fd_limit")
                    self._selector.unregister(self.listener)
                    self._accept_paused_until = time.monotonic() + self.limits.accept_pause_seconds
                    return
                continue  # ECONNABORTED and the like: that client is gone already
            soft = _fd_soft_limit()
            # accept(2) hands out the lowest free descriptor, so every one below this number is
            # in use: what is left below the limit is at most `soft - fileno - 1`.
            if soft is not None and sock.fileno() >= soft - self.limits.fd_reserve:
                self.rejections.add("fd_reserve")
                sock.close()
            elif len(self._conns) >= self.limits.max_connections:
                self.rejections.add("too_many_connections")
                self._refuse(sock)
            else:
                self._open(sock)

    def _refuse(self, sock: socket.socket) -> None:
        if self.tls is None:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        sock.close()

    def _open(self, sock: socket.socket) -> None:
        assert self._selector is not None
        sock.setblocking(False)
        deadline = time.monotonic() + self.limits.deadline_seconds
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError:
                self.rejections.add("tls_handshake")
                sock.close()
                return
        conn = _Conn(sock, deadline, handshaking=self.tls is not None)
        self._conns[sock.fileno()] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _want(self, conn: _Conn, events: int) -> None:
        assert self._selector is not None
        self._selector.modify(conn.sock, events, conn)

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock.fileno(), None) is not None and self._selector is not None:
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _service(self, conn: _Conn, mask: int) -> None:
        if conn.handshaking and not self._handshake(conn):
            return
        if conn.out is None:
            self._read(conn)
        if conn.out is not None:
            self._write(conn)

    def _handshake(self, conn: _Conn) -> bool:
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
            return False
        except OSError:  # ssl.SSLError included
            self.rejections.add("tls_handshake")
            self._close(conn)
            return False
        conn.handshaking = False
        self._want(conn, selectors.EVENT_READ)
        return True

    def _read(self, conn: _Conn) -> None:
        limit = self.limits.max_head_bytes
        while True:
            try:
                chunk = conn.sock.recv(_RECV_BYTES)
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                self._want(conn, selectors.EVENT_WRITE)
                return
            except OSError:
                self._close(conn)
                return
            if not chunk:  # the client hung up before its request was complete
                self._close(conn)
                return
            conn.buf += chunk
            end = _head_end(conn.buf)
            if end < 0 and len(conn.buf) <= limit:
                continue
            if end < 0 or end > limit:
                self._answer(conn, plain_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE))
                self.rejections.add("header_too_large")
                return
            parsed = parse_head(bytes(conn.buf[:end]), self.limits.max_headers)
            if isinstance(parsed, Request):
                self._answer(conn, self._call(parsed))
            else:
                status, reason = parsed
                self.rejections.add(reason)
                self._answer(conn, plain_response(status))
            return

    def _call(self, request: Request) -> Response:
        try:
            return self.handler(request)
        except Exception:
            log.exception("metrics endpoint: answering %s %s failed", request.method, request.path)
            return plain_response(HTTPStatus.INTERNAL_SERVER_ERROR)

    def _answer(self, conn: _Conn, response: Response) -> None:
        conn.buf = bytearray()  # the head is no longer needed: free it before writing
        conn.out = _response_bytes(response)
        self._want(conn, selectors.EVENT_WRITE)

    def _write(self, conn: _Conn) -> None:
        assert conn.out is not None
        while conn.out:
            try:
                sent = conn.sock.send(conn.out[0])
            except (BlockingIOError, ssl.SSLWantWriteError):
                return
            except ssl.SSLWantReadError:
                self._want(conn, selectors.EVENT_READ)
                return
            except OSError:  # the scraper hung up mid-response: not our error
                self._close(conn)
                return
            conn.out[0] = conn.out[0][sent:]
            if not conn.out[0]:
                conn.out.pop(0)
        self._close(conn)
