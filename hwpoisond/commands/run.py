"""`hwpoisond run`: the daemon's main job.

Rule: validates everything before starting anything (bad config → exit 78, nothing started), then
hands over to `hwpoisond.daemon.Daemon`.
"""

from __future__ import annotations

import argparse
import logging

from hwpoisond import exitcodes, logs
from hwpoisond.commands.common import load_config, state_dir
from hwpoisond.daemon import Daemon
from hwpoisond.kernelfs import KernelFS
from hwpoisond.metrics.exporter import MetricsConfigError
from hwpoisond.store.db import StoreError, UnsafeStateDirError


def main(args: argparse.Namespace) -> int:
    loaded = load_config(args)
    if isinstance(loaded, int):
        return loaded
    cfg = loaded
    logs.setup(args.log_level or cfg.daemon.log_level, cfg.daemon.log_rate_limit_interval)
    daemon = Daemon(cfg, KernelFS(args.root), state_dir(args, cfg), args.config)
    try:
        return daemon.run()
    except MetricsConfigError as e:
        # Raised by the metrics bind, the first thing start() does: nothing else has started.
        logging.getLogger("hwpoisond").error("hwpoisond: bad [metrics] configuration: %s", e)
        return exitcodes.CONFIG
    except UnsafeStateDirError as e:
        # The state directory as configured is unsafe to use as root: restarting cannot fix it.
        logging.getLogger("hwpoisond").error("hwpoisond: %s", e)
        return exitcodes.CONFIG
    except (OSError, StoreError) as e:
        logging.getLogger("hwpoisond").error("hwpoisond: %s", e)
        return exitcodes.FAILURE
