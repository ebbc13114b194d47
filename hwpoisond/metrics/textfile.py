"""node_exporter textfile output: the exposition written atomically into a directory.

Rule: a reader (node_exporter's textfile collector) sees the old file or the new one, whole,
never a torn write: temporary file, fsync, chmod 0644, rename(2); a failed write leaves no
temporary file behind and raises.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

#: node_exporter's textfile collector reads only `*.prom` files in its directory.
TEXTFILE_NAME = "hwpoisond.prom"


def write_textfile(directory: Path, data: bytes) -> Path:
    """Write `data` to `<directory>/hwpoisond.prom` atomically; the temporary file has no `.prom`
    suffix, so node_exporter ignores it."""
    target = directory / TEXTFILE_NAME
    fd, tmp = tempfile.mkstemp(prefix=".hwpoisond.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # node_exporter usually runs as another user: the file must be world-readable.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        raise
    return target
