#!/usr/bin/env bash
# Sets up a fresh Debian machine for hwpoisond: the apt packages it needs, then a virtualenv with
# the package installed in it. Idempotent: a second run checks and returns quickly.
#   scripts/bootstrap.sh run    packages to build and run the daemon
#   scripts/bootstrap.sh test   ... plus what the test suite drives (promtool, node_exporter, qemu)
set -euo pipefail
cd "$(dirname "$0")/.."

purpose=${1:-run}
venv=${VENV:-.venv}
python=${PYTHON:-python3}

# systemd-python compiles against libsystemd; pkg-config finds it.
packages=(libsystemd-dev pkg-config gcc python3-dev)
if [ "$purpose" = test ]; then
    # promtool (rule tests), node_exporter (EDAC parity test), and the real-kernel tier:
    # qemu without KVM, a static busybox for the initramfs, cpio to pack it, kmod for depmod.
    # systemd-journal-remote writes real journal files for the journald source's tests.
    packages+=(prometheus prometheus-node-exporter qemu-system-x86 busybox-static cpio kmod
               sqlite3 systemd-journal-remote openssl)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3-dev is only needed when the interpreter is Debian's own; a pyenv build ships its headers.
if [ ${#missing[@]} -gt 0 ]; then
    inc=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    if [ -f "$inc/Python.h" ]; then
        filtered=()
        for p in "${missing[@]}"; do [ "$p" = python3-dev ] || filtered+=("$p"); done
        missing=("${filtered[@]+"${filtered[@]}"}")
    fi
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "bootstrap: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: missing Debian packages; run as root:" >&2
        echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
fi

stamp="$venv/.installed"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e '.[dev]'
    touch "$stamp"
fi
