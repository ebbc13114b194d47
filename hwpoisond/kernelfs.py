"""The kernel filesystem object: the only place a kernel path (sys/…, proc/…, tracefs) meets a root.

Rule: every read and write of /sys, /proc, tracefs and debugfs goes through `KernelFS`; paths
resolve under its root, a path that would leave the root is refused, and every failure is a
`KernelFSError` that keeps the errno and the kernel path. Tests pass a fake root (a directory tree);
nothing patches globals.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

#: Kernel attribute files are small; anything bigger than this is not what we think it is.
DEFAULT_MAX_READ_BYTES = 1 << 20


class KernelFSError(OSError):
    """An operation on a kernel path failed. `errno` is the kernel's (or the OS's) answer and
    `kpath` the path as the kernel names it (relative to the root), so callers can report both."""

    def __init__(self, err: int, kpath: str, op: str, detail: str | None = None) -> None:
        message = detail or os.strerror(err)
        super().__init__(err, f"{op} {kpath}: {message}")
        self.kpath = kpath
        self.op = op

    @property
    def errno_name(self) -> str:
        return errno.errorcode.get(self.errno or 0, str(self.errno))


class PathEscapeError(KernelFSError):
    """The path (through `..` or a symlink) would resolve outside the root."""

    def __init__(self, kpath: str, op: str) -> None:
        super().__init__(errno.EXDEV, kpath, op, "path escapes the kernel filesystem root")


class KernelFS:
    """Kernel paths resolved under `root` (default `/`, the live machine)."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(os.path.realpath(root))
        self.is_live = self.root == Path("/")

    def __repr__(self) -> str:
        return f"KernelFS({str(self.root)!r})"

    # -- path mapping ---------------------------------------------------------------------------

    @staticmethod
    def _normalise(kpath: str) -> str:
        # Kernel paths are accepted with or without the leading slash: "/sys/x" == "sys/x".
        return kpath.lstrip("/")

    def path(self, kpath: str, op: str = "resolve") -> Path:
        """The host path for `kpath`; refuses `..` or symlinks that leave the root."""
        rel = self._normalise(kpath)
        if "\x00" in rel:
            raise KernelFSError(errno.EINVAL, kpath, op, "NUL byte in path")
        candidate = self.root / rel
        if self.is_live:
            return candidate
        resolved = Path(os.path.realpath(candidate))
        if resolved != self.root and self.root not in resolved.parents:
            raise PathEscapeError(kpath, op)
        return resolved

    def exists(self, kpath: str) -> bool:
        # pathlib only swallows ENOENT-like errors; as non-root, EACCES on /sys/kernel/tracing
        # is an ordinary answer too ("not there for us"), not a crash.
        try:
            return self.path(kpath, "stat").exists()
        except OSError:
            return False

    def is_dir(self, kpath: str) -> bool:
        try:
            return self.path(kpath, "stat").is_dir()
        except OSError:
            return False

    # -- reads ------------------------------------------------------------------------------------

    def read_bytes(self, kpath: str, max_bytes: int = DEFAULT_MAX_READ_BYTES) -> bytes:
        host = self.path(kpath, "read")
        try:
            with open(host, "rb", buffering=0) as f:
                return f.read(max_bytes)
        except OSError as e:
            raise KernelFSError(e.errno or errno.EIO, kpath, "read") from e

    def read_text(self, kpath: str, max_bytes: int = DEFAULT_MAX_READ_BYTES) -> str:
        """The file's text with the trailing newline removed; undecodable bytes are replaced."""
        return self.read_bytes(kpath, max_bytes).decode("utf-8", "replace").rstrip("\n")

    def read_int(self, kpath: str, base: int = 0) -> int:
        text = self.read_text(kpath, 4096).strip()
        try:
            return int(text, base)
        except ValueError as e:
            raise KernelFSError(
                errno.EINVAL, kpath, "read", f"not an integer: {text[:40]!r}"
            ) from e

    def pread(self, kpath: str, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` (e.g. one pfn's 8 bytes of /proc/kpageflags)."""
        host = self.path(kpath, "read")
        try:
            fd = os.open(host, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise KernelFSError(e.errno or errno.EIO, kpath, "open") from e
        try:
            return os.pread(fd, length, offset)
        except OSError as e:
            raise KernelFSError(e.errno or errno.EIO, kpath, "read") from e
        finally:
            os.close(fd)

    def listdir(self, kpath: str) -> list[str]:
        host = self.path(kpath, "list")
        try:
            return sorted(os.listdir(host))
        except OSError as e:
            raise KernelFSError(e.errno or errno.EIO, kpath, "list") from e

    # -- writes -----------------------------------------------------------------------------------

    def write_text(self, kpath: str, text: str) -> None:
        """One write(2) of `text`, as `echo text > kpath` does. Sysfs stores act on that single
        write and answer with its errno (e.g. soft_offline_page: EBUSY, EIO, ENXIO)."""
        host = self.path(kpath, "write")
        data = text.encode()
        try:
            fd = os.open(host, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise KernelFSError(e.errno or errno.EIO, kpath, "open") from e
        try:
            written = os.write(fd, data)
        except OSError as e:
            raise KernelFSError(e.errno or errno.EIO, kpath, "write") from e
        finally:
            os.close(fd)
        if written != len(data):
            raise KernelFSError(errno.EIO, kpath, "write", f"short write {written}/{len(data)}")

    def mkdir(self, kpath: str) -> None:
        host = self.path(kpath, "mkdir")
        try:
            os.mkdir(host)
        except OSError as e:
            raise KernelFSError(e.errno or errno.EIO, kpath, "mkdir") from e

    def rmdir(self, kpath: str) -> None:
        host = self.path(kpath, "rmdir")
        try:
            os.rmdir(host)
        except OSError as e:
            raise KernelFSError(e.errno or errno.EIO, kpath, "rmdir") from e

    # -- streams ----------------------------------------------------------------------------------

    def open_nonblocking(self, kpath: str) -> int:
        """A non-blocking read fd (trace_pipe, a FIFO in a fake root) for a selector loop.
        The caller owns the fd and closes it."""
        host = self.path(kpath, "open")
        try:
            return os.open(host, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise KernelFSError(e.errno or errno.EIO, kpath, "open") from e
