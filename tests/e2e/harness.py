"""Real-kernel harness: fetches Debian's stock kernel, builds a busybox initramfs, boots qemu.

Rule: this module prepares and boots guests and hands back what they wrote; it asserts nothing
about hwpoisond (the tests do). The guest's half of the contract is tests/e2e/guest/init.sh.

Nothing here is installed on the host: the kernel package is fetched with `apt-get download` and
unpacked with `dpkg-deb -x` into a cache directory (`HWPOISOND_E2E_CACHE`, default
~/.cache/hwpoisond-e2e). The host root is shared with the guest read-only; the guest writes only
to its own tmpfs and to the out directory given to `boot()`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent
REPO_DIR = E2E_DIR.parent.parent
GUEST_DIR = E2E_DIR / "guest"
INIT_SCRIPT = GUEST_DIR / "init.sh"

#: Where the out share is mounted inside the guest (init.sh mounts it there).
GUEST_OUT = "/run/hwpoisond-e2e/out"

#: The modules init.sh loads; their dependencies (netfs, fscache, 9pnet, virtio…) come from
#: modules.dep. Everything else the tests need (tracefs, debugfs, memory_failure) is built in.
GUEST_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "hwpoison-inject", "mce-inject")

#: Debian packages the harness drives, by the command each provides.
HOST_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "cpio": "cpio",
    "depmod": "kmod",
    "modprobe": "kmod",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
}
BUSYBOX_STATIC = Path("/bin/busybox")

_PT_INTERP = 3


class HarnessUnavailableError(Exception):
    """The tier cannot run on this machine; the message says exactly why (pytest skips with it)."""


class GuestError(Exception):
    """The guest did not finish (timeout, no exit code); the message carries the console tail."""


@dataclass(frozen=True)
class GuestKernel:
    package: str  # e.g. linux-image-6.1.0-56-amd64
    package_version: str  # e.g. 6.1.192-2
    release: str  # uname -r inside the guest, e.g. 6.1.0-56-amd64
    vmlinuz: Path
    config: Path
    initramfs: Path


@dataclass(frozen=True)
class GuestRun:
    exit_code: int
    out_dir: Path
    console_log: Path  # the serial console (kernel + init messages)
    scenario_log: Path  # stdout+stderr of scenario.sh
    dmesg: Path  # the guest's kernel ring buffer at power-off
    boot_seconds: float  # qemu start to the scenario starting (from the console timestamps)
    total_seconds: float  # qemu start to qemu exit


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "hwpoisond-e2e"
    return Path(os.environ.get("HWPOISOND_E2E_CACHE", str(default)))


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=False, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def _is_static_elf(path: Path) -> bool:
    """True when the ELF executable has no program interpreter (needs no ld.so in the initramfs)."""
    try:
        with path.open("rb") as f:
            header = f.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
                return False
            phoff = struct.unpack_from("<Q", header, 0x20)[0]
            phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != _PT_INTERP for i in range(phnum)
    )


def _missing_packages() -> list[str]:
    missing = {pkg for cmd, pkg in HOST_PACKAGES.items() if shutil.which(cmd) is None}
    if not _is_static_elf(BUSYBOX_STATIC):
        missing.add("busybox-static")
    return sorted(missing)


def ensure_host_tools() -> None:
    """Installs missing Debian packages when root; raises HarnessUnavailableError when it cannot."""
    missing = _missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise HarnessUnavailableError(
            f"missing Debian packages {' '.join(missing)} and not root to install them "
            f"(scripts/bootstrap.sh test installs them)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], env=env)
    res = _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    still = _missing_packages()
    if still:
        raise HarnessUnavailableError(
            f"Debian packages {' '.join(still)} unavailable: apt-get install said: "
            f"{(res.stderr or res.stdout).strip()[-500:]}"
        )


def _kernel_package() -> str:
    """Debian 12's current stock kernel image package (what linux-image-amd64 depends on)."""
    pinned = os.environ.get("HWPOISOND_E2E_KERNEL_PACKAGE")
    if pinned:
        return pinned
    for attempt in range(2):
        res = _run(["apt-cache", "depends", "linux-image-amd64"])
        m = re.search(r"Depends:\s*(linux-image-[0-9][\w.+-]*-amd64)\b", res.stdout)
        if m:
            return m.group(1)
        if attempt == 0 and os.geteuid() == 0:
            _run(["apt-get", "update", "-qq"])  # a fresh machine's apt lists may be empty
    raise HarnessUnavailableError(
        "apt-cache knows no linux-image-amd64 (no Debian package lists?): "
        f"{(res.stderr or res.stdout).strip()[-300:]}"
    )


def _package_version(package: str) -> str:
    res = _run(["apt-cache", "policy", package])
    m = re.search(r"Candidate:\s*(\S+)", res.stdout)
    if not m or m.group(1) == "(none)":
        raise HarnessUnavailableError(f"apt-cache has no candidate for {package}")
    return m.group(1)


def _module_closure(tree: Path, release: str) -> list[Path]:
    """The .ko files to insmod, dependencies first, each once (modprobe's own resolution)."""
    order: list[Path] = []
    for name in GUEST_MODULES:
        res = _run(["modprobe", "-d", str(tree), "-S", release, "--show-depends", name])
        if res.returncode != 0:
            raise HarnessUnavailableError(f"module {name} not in {release}: {res.stderr.strip()}")
        for line in res.stdout.splitlines():
            parts = line.split()
            if parts and parts[0] == "insmod":
                ko = Path(parts[1])
                if ko not in order:
                    order.append(ko)
    return order


def _download(package: str, version: str, work: Path) -> Path | None:
    _run(["apt-get", "download", f"{package}={version}"], cwd=work)
    debs = list(work.glob("*.deb"))
    return debs[0] if debs else None


def fetch_kernel() -> tuple[str, str, Path]:
    """Downloads and unpacks the kernel package once; returns (package, version, kernel dir).

    The kernel dir holds vmlinuz, config, System.map, modules/*.ko and modules/load-order.
    """
    package = _kernel_package()
    version = _package_version(package)
    kdir = cache_dir() / f"{package}_{version}"
    if (kdir / "modules" / "load-order").is_file():
        return package, version, kdir
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="fetch-") as tmp:
        work = Path(tmp)
        deb = _download(package, version, work)
        if deb is None and os.geteuid() == 0:
            # Stale apt lists name a version the archive no longer serves (a security update
            # replaced it): refresh them once and ask again.
            _run(["apt-get", "update", "-qq"])
            package = _kernel_package()
            version = _package_version(package)
            kdir = cache_dir() / f"{package}_{version}"
            if (kdir / "modules" / "load-order").is_file():
                return package, version, kdir
            deb = _download(package, version, work)
        if deb is None:
            raise HarnessUnavailableError(f"apt-get download {package}={version} failed")
        tree = work / "tree"
        res = _run(["dpkg-deb", "-x", str(deb), str(tree)])
        if res.returncode != 0:
            raise HarnessUnavailableError(f"dpkg-deb -x failed: {res.stderr.strip()}")
        (release,) = (p.name for p in (tree / "lib" / "modules").iterdir())
        res = _run(["depmod", "-b", str(tree), release])
        if res.returncode != 0:
            raise HarnessUnavailableError(f"depmod failed: {res.stderr.strip()}")
        staged = work / "kernel"
        (staged / "modules").mkdir(parents=True)
        for src, dst in (
            (f"vmlinuz-{release}", "vmlinuz"),
            (f"config-{release}", "config"),
            (f"System.map-{release}", "System.map"),
        ):
            shutil.copy2(tree / "boot" / src, staged / dst)
        names = []
        for ko in _module_closure(tree, release):
            shutil.copy2(ko, staged / "modules" / ko.name)
            names.append(ko.name)
        (staged / "modules" / "load-order").write_text("\n".join(names) + "\n")
        (staged / "release").write_text(release + "\n")
        shutil.rmtree(kdir, ignore_errors=True)
        staged.rename(kdir)
    return package, version, kdir


def build_initramfs(kdir: Path) -> Path:
    """A newc cpio with static busybox, init.sh as /init and the module closure; cached by hash."""
    modules = sorted((kdir / "modules").iterdir())
    digest = hashlib.sha256()
    for p in [INIT_SCRIPT, BUSYBOX_STATIC, *modules]:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    image = kdir / f"initramfs-{digest.hexdigest()[:16]}.cpio"
    if image.is_file():
        return image
    with tempfile.TemporaryDirectory(dir=kdir, prefix="initramfs-") as tmp:
        root = Path(tmp)
        for d in ("bin", "modules", "proc", "sys", "dev", "newroot"):
            (root / d).mkdir()
        shutil.copy2(BUSYBOX_STATIC, root / "bin" / "busybox")
        shutil.copy2(INIT_SCRIPT, root / "init")
        (root / "init").chmod(0o755)
        for p in modules:
            shutil.copy2(p, root / "modules" / p.name)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        partial = image.with_suffix(".partial")
        with partial.open("wb") as f:
            res = subprocess.run(
                ["cpio", "-o", "-H", "newc", "--quiet"],
                cwd=root,
                input="\n".join([".", *files]).encode(),
                stdout=f,
                stderr=subprocess.PIPE,
                check=False,
            )
        if res.returncode != 0:
            raise HarnessUnavailableError(f"cpio failed: {res.stderr.decode(errors='replace')}")
        partial.rename(image)
    return image


def prepare() -> GuestKernel:
    """Everything a boot needs, fetched and built once per cache; raises HarnessUnavailableError."""
    ensure_host_tools()
    package, version, kdir = fetch_kernel()
    return GuestKernel(
        package=package,
        package_version=version,
        release=(kdir / "release").read_text().strip(),
        vmlinuz=kdir / "vmlinuz",
        config=kdir / "config",
        initramfs=build_initramfs(kdir),
    )


def scenario_script(body: str) -> str:
    """A scenario.sh: `body` runs with $PY (this venv's python) and $GUEST (guest dir) set.

    The venv and the repo are read over the host root share, so the code under test is exactly
    the working tree's (nothing is copied into the guest).
    """
    return (
        f"PY={shlex.quote(sys.executable)}\n"
        f"GUEST={shlex.quote(str(GUEST_DIR))}\n"
        f"REPO={shlex.quote(str(REPO_DIR))}\n"
        "export PY GUEST REPO\n"
        f"{body}\n"
    )


def boot(
    kernel: GuestKernel,
    out_dir: Path,
    scenario_sh: str,
    *,
    timeout_seconds: float = 240.0,
    memory_mib: int = 1024,
) -> GuestRun:
    """Boots the guest once, runs `scenario_sh` (a /bin/sh script) inside it, waits for power-off.

    `out_dir` is the writable share (the guest sees it at GUEST_OUT, also as $E2E_OUT); it may
    already hold files from an earlier boot (a state directory that survives a "reboot").
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("exit_code", "scenario.log", "dmesg.txt", "boot_uptime"):
        (out_dir / stale).unlink(missing_ok=True)
    (out_dir / "scenario.sh").write_text(scenario_sh)
    console = out_dir / "console.log"
    argv = [
        "qemu-system-x86_64",
        # KVM aborts (MSR 0x10a) or hangs on these machines; TCG is slow but faithful.
        "-accel",
        "tcg",
        # TCG's "max" CPU says AuthenticAMD; hwpoisond (like the kernel) decodes an MCA status
        # by vendor, and the Intel memory-controller error code is what the tests inject.
        "-cpu",
        "max,vendor=GenuineIntel",
        "-smp",
        "1",
        "-m",
        str(memory_mib),
        "-nographic",
        "-nodefaults",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        f"file:{console}",
        "-kernel",
        str(kernel.vmlinuz),
        "-initrd",
        str(kernel.initramfs),
        "-append",
        "console=ttyS0 panic=-1 log_buf_len=4M printk.time=1 loglevel=6",
        "-virtfs",
        "local,path=/,mount_tag=host,readonly=on,multidevs=remap,security_model=none",
        "-virtfs",
        f"local,path={out_dir},mount_tag=out,multidevs=remap,security_model=none",
    ]
    started = time.monotonic()
    try:
        res = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GuestError(
            f"guest still running after {timeout_seconds:.0f}s; console tail:\n"
            + _tail(console)
            + "\nscenario tail:\n"
            + _tail(out_dir / "scenario.log")
        ) from None
    total = time.monotonic() - started
    exit_file = out_dir / "exit_code"
    if not exit_file.is_file():
        raise GuestError(
            f"guest powered off without an exit code (qemu exit {res.returncode}, "
            f"stderr {res.stderr.strip()[-300:]!r}); console tail:\n{_tail(console)}"
        )
    return GuestRun(
        exit_code=int(exit_file.read_text().strip()),
        out_dir=out_dir,
        console_log=console,
        scenario_log=out_dir / "scenario.log",
        dmesg=out_dir / "dmesg.txt",
        boot_seconds=_uptime_seconds(out_dir / "boot_uptime"),
        total_seconds=total,
    )


def _uptime_seconds(path: Path) -> float:
    """The first field of a copy of the guest's /proc/uptime, or NaN when init never wrote it."""
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path.name} missing)"
