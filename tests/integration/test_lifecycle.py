"""The daemon as systemd sees it: a real subprocess, a real NOTIFY_SOCKET, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.daemonproc import DaemonProcess


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "sys").mkdir()
    return root


def test_ready_then_sigterm_stops_cleanly_within_two_seconds(
    tmp_path: Path, fake_root: Path
) -> None:
    state = tmp_path / "state"
    with DaemonProcess(tmp_path, fake_root, state) as d:
        ready = d.wait_ready()
        assert "STATUS=" in ready
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.proc.wait(5) == 0
        assert time.monotonic() - t0 < 2.0
        d.wait_for_message("STOPPING=1", timeout=1)
    assert state.stat().st_mode & 0o777 == 0o700


def test_sigint_also_stops(tmp_path: Path, fake_root: Path) -> None:
    with DaemonProcess(tmp_path, fake_root, tmp_path / "state") as d:
        d.wait_ready()
        d.signal(signal.SIGINT)
        assert d.proc.wait(5) == 0


def test_watchdog_pings_at_half_the_interval(tmp_path: Path, fake_root: Path) -> None:
    env = {"WATCHDOG_USEC": "400000"}  # 0.4 s → a ping every 0.2 s
    with DaemonProcess(tmp_path, fake_root, tmp_path / "state", extra_env=env) as d:
        d.wait_ready()
        t0 = time.monotonic()
        d.wait_for_message("WATCHDOG=1", timeout=2)
        pings = 1
        while pings < 3:
            d.messages.clear()
            d.wait_for_message("WATCHDOG=1", timeout=2)
            pings += 1
        elapsed = time.monotonic() - t0
        assert 0.3 < elapsed < 2.0, elapsed
        assert d.stop() == 0


def test_sighup_with_bad_config_keeps_old_and_good_config_reloads(
    tmp_path: Path, fake_root: Path
) -> None:
    cfg = tmp_path / "hwpoisond.toml"
    cfg.write_text("[daemon]\nlog_level = 'info'\n")
    with DaemonProcess(tmp_path, fake_root, tmp_path / "state", config=cfg) as d:
        d.wait_ready()
        cfg.write_text("[policy]\nce_threshold = -5\n")
        d.signal(signal.SIGHUP)
        d.wait_for_message("RELOADING=1")
        d.messages.clear()
        d.wait_ready()  # READY=1 again after the reload attempt
        assert d.proc.poll() is None, "a bad config on reload must not stop the daemon"
        deadline = time.monotonic() + 5
        while "policy.ce_threshold" not in d.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "config reload rejected, keeping the old config" in d.stderr()
        assert "policy.ce_threshold: got -5" in d.stderr()

        cfg.write_text("[daemon]\nlog_level = 'debug'\n")
        d.messages.clear()
        d.signal(signal.SIGHUP)
        d.wait_for_message("RELOADING=1")
        d.wait_ready()
        deadline = time.monotonic() + 5
        while "config reloaded" not in d.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "config reloaded" in d.stderr()
        assert d.stop() == 0


def test_bad_config_exits_78_and_starts_nothing(tmp_path: Path, fake_root: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[policy]\naction = 'explode'\nwindow = '24x'\n")
    state = tmp_path / "state"
    with DaemonProcess(tmp_path, fake_root, state, config=cfg) as d:
        assert d.proc.wait(10) == 78
        assert not state.exists(), "nothing may be started on a bad config"
        err = d.stderr()
        assert "policy.action: got 'explode'" in err
        assert "policy.window: got '24x'" in err
        with pytest.raises(AssertionError):
            d.wait_for_message("READY=1", timeout=0.2)


def test_bad_metrics_address_exits_78_before_the_state_dir_exists(
    tmp_path: Path, fake_root: Path
) -> None:
    # The config model accepts any string; only the bind can tell a host name that does not
    # resolve. It is still the operator's config, so it is exit 78 and nothing is started.
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[metrics]\nlisten_address = 'no such host.invalid'\nport = 9101\n")
    state = tmp_path / "state"
    with DaemonProcess(tmp_path, fake_root, state, config=cfg) as d:
        assert d.proc.wait(20) == 78
        assert not state.exists(), "nothing may be started on a bad [metrics] section"
        err = d.stderr()
        assert "bad [metrics] configuration" in err
        assert "no such host.invalid" in err


def test_runs_without_notify_socket(tmp_path: Path, fake_root: Path) -> None:
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hwpoisond",
                "run",
                "--root",
                str(fake_root),
                "--state-dir",
                str(tmp_path / "state"),
            ],
            stderr=err,
            env={"PATH": "/usr/bin:/bin"},
        )
        try:
            deadline = time.monotonic() + 15
            while b"hwpoisond ready" not in err_path.read_bytes():
                assert proc.poll() is None, err_path.read_text()
                assert time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert b"Traceback" not in err_path.read_bytes()
    # An empty machine (no memory-failure interfaces) says so once and points to simulate.
    assert err_path.read_bytes().count(b"run `hwpoisond simulate`") == 1


def test_a_state_directory_another_user_owns_is_refused_with_78(
    tmp_path: Path, fake_root: Path
) -> None:
    # The audit's attack: a user who owns the state directory plants `hwpoisond.db` as a link
    # to a file of root's; the daemon (root) opened and chmodded the link's target.
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    victim.chmod(0o644)
    (state / "hwpoisond.db").symlink_to(victim)
    os.chown(state, 65534, 65534)
    with DaemonProcess(tmp_path, fake_root, state) as d:
        assert d.proc.wait(20) == 78
        assert "owned by uid 65534" in d.stderr()
    assert victim.stat().st_mode & 0o777 == 0o644 and victim.read_text() == "root's file\n"


def test_a_link_planted_as_the_database_is_refused(tmp_path: Path, fake_root: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    victim.chmod(0o644)
    (state / "hwpoisond.db").symlink_to(victim)
    with DaemonProcess(tmp_path, fake_root, state) as d:
        assert d.proc.wait(20) == 78
        assert "is a symbolic link: refused" in d.stderr()
    assert victim.stat().st_mode & 0o777 == 0o644 and victim.read_text() == "root's file\n"


def test_a_state_directory_others_can_write_is_refused(tmp_path: Path, fake_root: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o1777)
    with DaemonProcess(tmp_path, fake_root, state) as d:
        assert d.proc.wait(20) == 78
        assert "writable by group or others (mode 1777)" in d.stderr()
    assert not (state / "hwpoisond.db").exists()
