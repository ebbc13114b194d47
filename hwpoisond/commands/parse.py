"""`hwpoisond parse [FILE…]`: reads kernel text, prints one JSON object per recognised event.

Rule: this is the only place of the parse path that does I/O. Input is read as bytes in blocks
of whole lines and decoded as UTF-8 with replacement; a line longer than MAX_LINE_BYTES is cut
there and the rest of it skipped, so binary data or a missing newline cannot exhaust memory or
crash us. Exit 0 unless an input cannot be read (66).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Iterator
from typing import BinaryIO, TextIO

from hwpoisond import exitcodes
from hwpoisond.commands.rasdb import RasdaemonDbError, is_sqlite, read_rasdaemon_db
from hwpoisond.parse import LineParser, event_to_json
from hwpoisond.parse.stream import MAX_LINE_CHARS
from hwpoisond.progress import Progress

MAX_LINE_BYTES = MAX_LINE_CHARS * 4  # UTF-8: at most 4 bytes per character
READ_BLOCK_BYTES = 1 << 20


def iter_text_blocks(stream: BinaryIO) -> Iterator[str]:
    """Decoded blocks of whole lines joined by "\\n" (no final newline), for
    `LineParser.feed_block`. Every input line lands in exactly one block, so line numbers are
    `count("\\n") + 1` per block."""
    carry = b""
    skipping = False  # dropping the tail of an overlong line up to its newline
    while True:
        block = stream.read(READ_BLOCK_BYTES)
        if not block:
            break
        if skipping:
            newline = block.find(b"\n")
            if newline < 0:
                continue
            block = block[newline + 1 :]
            skipping = False
        data = carry + block
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
        else:
            carry = data[cut + 1 :]
            yield data[:cut].decode("utf-8", "replace")
        if len(carry) > MAX_LINE_BYTES:
            yield carry[:MAX_LINE_BYTES].decode("utf-8", "replace")
            carry, skipping = b"", True
    if carry:
        yield carry.decode("utf-8", "replace")


def _print(events: list[object]) -> None:
    if events:
        sys.stdout.write("".join(json.dumps(e) + "\n" for e in events))


def _parse_stream(stream: BinaryIO, parser: LineParser, label: str) -> None:
    try:
        size: int | None = os.fstat(stream.fileno()).st_size or None
    except (OSError, ValueError):
        size = None
    progress = Progress(f"parse {label}", total=size, unit="B")
    try:
        for text in iter_text_blocks(stream):
            _print([event_to_json(event) for event in parser.feed_block(text)])
            try:
                done = stream.tell()
            except OSError:  # a pipe
                done = 0
            progress.update(done, f"{parser.stats.lines} lines")
    finally:
        progress.done()


#: Years `--year` accepts: what a datetime can hold, after the epoch.
YEAR_RANGE = range(1970, 10000)


def prime_year(parser: LineParser, year: int | None, stream: BinaryIO | TextIO) -> None:
    """Give `parser` the year of yearless timestamps before it reads `stream`: `year`
    (`--year`) when given, else the stream's modification time, else now (a pipe)."""
    if year is not None:
        parser.set_year(year)
        return
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        parser.year_from_reference(st.st_mtime, "file modification time")
    else:
        parser.year_from_reference(time.time(), "current time (input is not a file)")


def _parse_db(name: str, parser: LineParser) -> bool:
    """Print the events of a rasdaemon database; count them (and rows that do not convert)
    in the parser's stats. False, after saying why, when it cannot be read."""
    try:
        db = read_rasdaemon_db(name)
    except (RasdaemonDbError, sqlite3.Error) as e:
        print(
            f"hwpoisond parse: {name}: cannot read it as rasdaemon's database: {e}", file=sys.stderr
        )
        return False
    _print([event_to_json(e) for e in parser.flush()])
    _print([event_to_json(e) for e in db.events])
    stats = parser.stats
    for event in db.events:
        stats.events[event.source] = stats.events.get(event.source, 0) + 1
    for table, n in db.malformed.items():
        key = f"rasdaemon_{table}"
        stats.malformed[key] = stats.malformed.get(key, 0) + n
    return True


def main(args: argparse.Namespace) -> int:
    try:
        return _main(args)
    except BrokenPipeError:
        # `parse big.log | head -1`: the reader has what it wanted; a closed stdout is not an
        # input error. Point stdout at /dev/null so the interpreter's final flush stays quiet
        # (the Python documentation's advice for SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return exitcodes.OK


def _main(args: argparse.Namespace) -> int:
    files: list[str] = list(args.files) or ["-"]
    # One parser across all files: several files are one host's logs in order, and `line`
    # numbers continue across them the way `cat a b | hwpoisond parse` would number them.
    year = getattr(args, "year", None)
    if year is not None and year not in YEAR_RANGE:
        print(f"hwpoisond parse: --year {year}: expected 1970 to 9999", file=sys.stderr)
        return exitcodes.USAGE
    parser = LineParser()
    per_file: list[dict[str, object]] = []
    for name in files:
        before = _totals(parser)
        if name == "-":
            prime_year(parser, year, sys.stdin.buffer)
            _parse_stream(sys.stdin.buffer, parser, "stdin")
        elif is_sqlite(name):
            if not _parse_db(name, parser):
                return exitcodes.NOINPUT
        else:
            try:
                with open(name, "rb") as stream:
                    prime_year(parser, year, stream)
                    _parse_stream(stream, parser, os.path.basename(name))
            except BrokenPipeError:
                raise
            except OSError as e:
                print(f"hwpoisond parse: cannot read {name}: {e.strerror or e}", file=sys.stderr)
                return exitcodes.NOINPUT
        after = _totals(parser)
        per_file.append({"file": name, **{k: after[k] - before[k] for k in after}})
    _print([event_to_json(event) for event in parser.flush()])
    sys.stdout.flush()
    if args.stats:
        stats = parser.stats.as_dict()
        stats["files"] = per_file
        print(json.dumps(stats), file=sys.stderr)
    return exitcodes.OK


def _totals(parser: LineParser) -> dict[str, int]:
    """The counts `--stats` breaks down per file. An event of a record still open at the end
    of a file is counted with the file where its record is closed."""
    stats = parser.stats
    return {
        "lines": stats.lines,
        "events": sum(stats.events.values()),
        "malformed": sum(stats.malformed.values()),
        "unparsed_candidates": stats.unparsed_candidates,
    }
