"""Guest-side page facts from /proc/kpageflags and /proc/meminfo; stdlib only, runs in the guest.

Rule: reads the GUEST kernel's files and prints facts; it never writes to the kernel (the
scenario scripts do that, visibly). Usage:
  pagetool.py free-pfns N [MIN_PFN]  N pfns that are free buddy heads, highest first
  pagetool.py flags PFN              the 64-bit kpageflags word of PFN, hex
  pagetool.py hwpoison PFN           1 if KPF_HWPOISON is set on PFN, else 0
  pagetool.py hardware-corrupted-kb  HardwareCorrupted from /proc/meminfo, in kB
"""

from __future__ import annotations

import sys

# include/uapi/linux/kernel-page-flags.h (6.1): KPF_BUDDY 10, KPF_HWPOISON 19.
KPF_BUDDY = 10
KPF_HWPOISON = 19
KPAGEFLAGS = "/proc/kpageflags"


def flags(pfn: int) -> int:
    with open(KPAGEFLAGS, "rb") as f:
        f.seek(pfn * 8)
        return int.from_bytes(f.read(8), "little")


def free_pfns(count: int, min_pfn: int) -> list[int]:
    """Heads of free buddy blocks (only BUDDY set), scanning down from the top of memory.

    Only the head page of a free block carries PG_buddy (mm/page_alloc.c), so a pfn whose word
    is exactly 1<<KPF_BUDDY is free right now and soft-offlines without migrating anything.
    """
    # kpageflags reads must be whole 8-byte words and the file reports size 0: read in chunks.
    words: list[int] = []
    with open(KPAGEFLAGS, "rb", buffering=0) as f:
        while chunk := f.read(8 * 65536):
            words.extend(memoryview(chunk).cast("Q"))
    buddy_only = 1 << KPF_BUDDY
    found = [pfn for pfn in range(len(words) - 1, min_pfn - 1, -1) if words[pfn] == buddy_only]
    return found[:count]


def hardware_corrupted_kb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HardwareCorrupted:"):
                return int(line.split()[1])
    raise SystemExit("no HardwareCorrupted in /proc/meminfo")


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "free-pfns":
        min_pfn = int(args[1], 0) if len(args) > 1 else 0x1000
        print(" ".join(str(p) for p in free_pfns(int(args[0]), min_pfn)))
    elif cmd == "flags":
        print(hex(flags(int(args[0], 0))))
    elif cmd == "hwpoison":
        print((flags(int(args[0], 0)) >> KPF_HWPOISON) & 1)
    elif cmd == "hardware-corrupted-kb":
        print(hardware_corrupted_kb())
    else:
        raise SystemExit(f"unknown command {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
