"""`hwpoisond parse [FILE…]`: reads kernel text, prints one JSON object per recognised event.

Rule: this is the only place of the parse path that does I/O. Input is read as bytes in blocks,
split into lines bounded to MAX_LINE_BYTES (the rest of an overlong line is skipped), and decoded
as UTF-8 with replacement, so binary data or a missing newline cannot exhaust memory or crash us.
Exit 0 unless an input cannot be read (66).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import BinaryIO

from hwpoisond import exitcodes
from hwpoisond.parse import LineParser, event_to_json
from hwpoisond.parse.stream import MAX_LINE_CHARS

MAX_LINE_BYTES = MAX_LINE_CHARS * 4  # UTF-8: at most 4 bytes per character
READ_BLOCK_BYTES = 1 << 20


def iter_lines(stream: BinaryIO) -> Iterator[str]:
    """Decoded lines of `stream`, each at most MAX_LINE_BYTES before decoding, without "\\n"."""
    carry = b""
    skipping = False  # inside the tail of an overlong line
    while True:
        block = stream.read(READ_BLOCK_BYTES)
        if not block:
            break
        lines = block.split(b"\n")
        last = lines.pop()
        for i, part in enumerate(lines):
            raw = part
            if i == 0:
                if skipping:
                    skipping = False
                    continue
                raw = carry + part
                carry = b""
            yield raw[:MAX_LINE_BYTES].decode("utf-8", "replace")
        if lines:
            carry, skipping = last, False
        elif not skipping:
            carry += last
        if len(carry) > MAX_LINE_BYTES:
            yield carry[:MAX_LINE_BYTES].decode("utf-8", "replace")
            carry, skipping = b"", True
    if carry and not skipping:
        yield carry.decode("utf-8", "replace")


def _parse_stream(stream: BinaryIO, parser: LineParser, lineno: int) -> int:
    """Feed every line of `stream`; returns the last line number used."""
    write = sys.stdout.write
    for text in iter_lines(stream):
        lineno += 1
        for event in parser.feed(text, lineno):
            write(json.dumps(event_to_json(event)) + "\n")
    return lineno


def main(args: argparse.Namespace) -> int:
    files: list[str] = list(args.files) or ["-"]
    # One parser across all files: several files are one host's logs in order, and `line`
    # numbers continue across them the way `cat a b | hwpoisond parse` would number them.
    parser = LineParser()
    lineno = 0
    for name in files:
        if name == "-":
            lineno = _parse_stream(sys.stdin.buffer, parser, lineno)
            continue
        try:
            with open(name, "rb") as stream:
                lineno = _parse_stream(stream, parser, lineno)
        except OSError as e:
            print(f"hwpoisond parse: cannot read {name}: {e.strerror or e}", file=sys.stderr)
            return exitcodes.NOINPUT
    for event in parser.flush():
        sys.stdout.write(json.dumps(event_to_json(event)) + "\n")
    sys.stdout.flush()
    if args.stats:
        print(json.dumps(parser.stats.as_dict()), file=sys.stderr)
    return exitcodes.OK
