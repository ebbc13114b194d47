"""`python -m bench [NAME…]`: run the named benchmarks (all when none), each in its own process.

Rule: this dispatcher discovers benchmarks by file name — `bench/NAME.py` or a package
`bench/NAME/` with a `__main__.py` — and runs `python -m bench.NAME`; it never imports them, so
one benchmark's imports or failures cannot break another. Arguments after `--` go to every
benchmark run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def discover() -> list[str]:
    names = [p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_")] + [
        p.parent.name for p in BENCH_DIR.glob("*/__main__.py")
    ]
    return sorted(set(names))


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    available = discover()
    if argv in (["--list"], ["-l"]):
        print("\n".join(available))
        return 0
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        print("available: " + ", ".join(available))
        return 0
    unknown = [n for n in argv if n not in available]
    if unknown:
        print(
            f"bench: unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}",
            file=sys.stderr,
        )
        return 2
    worst = 0
    for name in argv or available:
        print(f"== bench {name}", file=sys.stderr, flush=True)
        code = subprocess.run(
            [sys.executable, "-m", f"bench.{name}", *extra], cwd=BENCH_DIR.parent, check=False
        ).returncode
        if code != 0:
            print(f"== bench {name}: exit {code}", file=sys.stderr)
            worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
