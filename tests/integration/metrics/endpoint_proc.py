"""A real metrics endpoint in a process of its own, driven over stdin, for tests that measure the
process (RSS, CPU time, file descriptors) while clients attack it.

Rule: test support only. Prints one JSON line `{"port": N, "pid": P}` once serving, then answers
each stdin command with one JSON line:
- `fill N`: open descriptors (of /dev/null) until at most N are left below RLIMIT_NOFILE's soft
  limit, standing for the daemon's own files; `{"free": left}`;
- `open N`: the daemon's own work: open N more files, then close them; `{"opened": n, "error": e}`;
- `rejected`: `{"reason": count, ...}` as the exporter counts them;
- `quit`.
Run as `python -m tests.integration.metrics.endpoint_proc [--nofile SOFT]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys

from hwpoisond.metrics import Exporter
from tests.unit.metrics.samples import populated_snapshot


def _reply(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nofile", type=int, default=None)
    args = parser.parse_args()
    if args.nofile is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    exporter = Exporter(port=0, snapshot=populated_snapshot())
    exporter.start()
    exporter.render()  # the first render's allocations belong to the baseline, not the attack
    _reply({"port": exporter.bound_port, "pid": os.getpid()})
    held: list[int] = []
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "fill":
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            while True:
                fd = os.open(os.devnull, os.O_RDONLY)
                held.append(fd)
                if fd >= soft - 1 - int(rest[0]):
                    break
            _reply({"free": soft - 1 - held[-1]})
        elif command == "open":
            opened, error, fds = 0, None, []
            try:
                for _ in range(int(rest[0])):
                    fds.append(os.open(os.devnull, os.O_RDONLY))
                    opened += 1
            except OSError as e:
                error = e.strerror
            for fd in fds:
                os.close(fd)
            _reply({"opened": opened, "error": error})
        elif command == "rejected":
            _reply(exporter.rejections.counts())
        elif command == "quit":
            break
    exporter.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
