"""Trigger scripts: real shell scripts in temporary directories, run as real child processes."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

import pytest

from hwpoisond.actions.triggers import TriggerOutcome, TriggerRunner, check_script, trigger_env

UIDS = (0, os.getuid())


def script(directory: Path, name: str, body: str, mode: int = 0o700) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, mode)
    return path


def wait_outcomes(runner: TriggerRunner, n: int, limit: float = 10.0) -> list[TriggerOutcome]:
    """Drive the runner as the daemon loop does: select on its pidfds with its timeout."""
    out: list[TriggerOutcome] = []
    deadline = time.monotonic() + limit
    while len(out) < n and time.monotonic() < deadline:
        timeout = runner.timeout()
        select.select(runner.fds(), [], [], 0.2 if timeout is None else min(timeout, 0.2))
        out += runner.poll()
    return out


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir(mode=0o700)
    return d


def test_check_script_refusals(bindir: Path) -> None:
    good = script(bindir, "ok", "exit 0\n")
    assert check_script(str(good), UIDS) is None
    assert check_script("relative/ok", UIDS) == "not an absolute path"
    assert "cannot stat" in (check_script(str(bindir / "missing"), UIDS) or "")
    gw = script(bindir, "gw", "exit 0\n", 0o770)
    assert "writable by group or others" in (check_script(str(gw), UIDS) or "")
    ow = script(bindir, "ow", "exit 0\n", 0o702)
    assert "writable by group or others" in (check_script(str(ow), UIDS) or "")
    noexec = script(bindir, "noexec", "exit 0\n", 0o600)
    assert check_script(str(noexec), UIDS) == "not executable"
    other = script(bindir, "other", "exit 0\n")
    os.chown(other, 65534, 65534)
    assert "owned by uid 65534" in (check_script(str(other), UIDS) or "")
    assert check_script(str(bindir), UIDS) == "not a regular file"


def test_loose_directory_and_symlink_target_are_checked(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)  # noqa: S103 - a world-writable directory is the point of the test
    target = script(loose, "t", "exit 0\n")
    assert "writable by group or others" in (check_script(str(target), UIDS) or "")
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o700)
    link = safe / "link"
    link.symlink_to(target)
    assert "writable by group or others" in (check_script(str(link), UIDS) or "")
    os.chmod(loose, 0o1777)  # noqa: S103 - sticky like /tmp: others cannot replace our file
    assert check_script(str(link), UIDS) is None


def test_not_root_owned_refused_with_default_uids(bindir: Path) -> None:
    path = script(bindir, "s", "exit 0\n")
    os.chown(path, 65534, 65534)
    runner = TriggerRunner({"page_retired": str(path)}, 5.0)
    assert runner.problems()["page_retired"].endswith("owned by uid 65534, not root")
    assert runner.fire("page_retired", {"pfn": 1}) is False
    [outcome] = runner.poll()
    assert outcome.refused is not None and outcome.returncode is None
    assert runner.started == 0


def test_event_data_only_in_environment_never_a_shell(bindir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    canary = tmp_path / "pwned"
    path = script(bindir, "s", f'echo "$#" > {out}.argc\nenv > {out}\n')
    runner = TriggerRunner({"uncorrected_error": str(path)}, 5.0, allowed_uids=UIDS)
    crafted = f"DIMM_A1; touch {canary} $(touch {canary}) `touch {canary}`\x00tail"
    assert runner.fire(
        "uncorrected_error",
        {"pfn": "0x12345", "label": crafted, "bad-key": "x", "count": 3, "mc": None},
    )
    [outcome] = wait_outcomes(runner, 1)
    assert (outcome.returncode, outcome.timed_out, outcome.refused) == (0, False, None)
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["HWPOISOND_EVENT"] == "uncorrected_error"
    assert env["HWPOISOND_PFN"] == "0x12345" and env["HWPOISOND_COUNT"] == "3"
    assert env["HWPOISOND_LABEL"] == crafted.replace("\x00", "")
    assert "HWPOISOND_MC" not in env and "HWPOISOND_BAD-KEY" not in env
    assert not canary.exists()
    # nothing of the parent's environment, no arguments
    assert {k for k in env if not k.startswith("HWPOISOND_")} <= {"PATH", "LANG", "PWD", "SHLVL"}
    assert Path(f"{out}.argc").read_text().strip() == "0"


def test_slow_script_does_not_block_and_is_killed_with_its_children(
    bindir: Path, tmp_path: Path
) -> None:
    child_pid = tmp_path / "child.pid"
    path = script(bindir, "slow", f"sleep 60 &\necho $! > {child_pid}\nwait\n")
    runner = TriggerRunner({"dimm_escalation": str(path)}, 0.5, allowed_uids=UIDS)
    t = time.monotonic()
    assert runner.fire("dimm_escalation", {"label": "DIMM_B2"})
    assert time.monotonic() - t < 0.2  # fire() returned at once
    assert runner.running() == 1
    [outcome] = wait_outcomes(runner, 1)
    assert outcome.timed_out and outcome.returncode == -9
    assert 0.5 <= outcome.duration_seconds < 3
    # the script's own child died with its process group (gone, or a zombie awaiting reaping
    # by whichever init adopted it)
    stat_file = Path(f"/proc/{int(child_pid.read_text())}/stat")
    time.sleep(0.1)
    assert not stat_file.exists() or stat_file.read_text().split(")")[1].split()[0] == "Z"


def test_failing_script_reports_exit_code(bindir: Path) -> None:
    path = script(bindir, "fail", "exit 3\n")
    runner = TriggerRunner({"offline_failed": str(path)}, 5.0, allowed_uids=UIDS)
    runner.fire("offline_failed", {"errno": "EBUSY"})
    [outcome] = wait_outcomes(runner, 1)
    assert outcome.returncode == 3 and not outcome.timed_out


def test_bounded_concurrency_and_queue(bindir: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    path = script(bindir, "s", f'sleep 0.2\necho "$HWPOISOND_N" >> {log}\n')
    runner = TriggerRunner(
        {"page_retired": str(path)}, 5.0, allowed_uids=UIDS, max_running=1, max_queued=2
    )
    accepted = [runner.fire("page_retired", {"n": i}) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    assert runner.dropped == 2 and runner.running() == 1
    outcomes = wait_outcomes(runner, 5)
    # The two beyond the queue come back as outcomes too (counted and logged by the daemon).
    assert sorted(o.kind for o in outcomes) == ["dropped", "dropped", "ok", "ok", "ok"]
    assert [o.returncode for o in outcomes if not o.dropped] == [0, 0, 0]
    assert log.read_text().split() == ["0", "1", "2"]  # one at a time, in order


def test_unconfigured_event_is_ignored_and_close_kills(bindir: Path) -> None:
    path = script(bindir, "s", "sleep 60\n")
    runner = TriggerRunner({"budget_exhausted": str(path)}, 60.0, allowed_uids=UIDS)
    assert runner.fire("page_retired", {}) is False
    assert runner.fire("budget_exhausted", {})
    assert runner.timeout() is not None
    [outcome] = runner.close()
    assert outcome.returncode == -9 and runner.running() == 0
    assert outcome.kind == "shutdown"


def test_trigger_env_shape() -> None:
    env = trigger_env("page_retired", {"pfn": 5, "phys_addr": "0x5000", "x" * 80: 1})
    assert env["HWPOISOND_PFN"] == "5" and env["HWPOISOND_PHYS_ADDR"] == "0x5000"
    assert not any(k.startswith("HWPOISOND_XXX") for k in env)


def test_a_link_in_a_directory_another_user_owns_is_refused_and_cannot_be_swapped(
    tmp_path: Path,
) -> None:
    # The audit's attack: the operator configures /…/user-dir/hook, a link to a trusted
    # root-owned script, in a directory a local user owns. The resolved path is trusted, so a
    # check of it alone passes, and the user re-points the link before the script runs.
    trusted = tmp_path / "trusted"
    trusted.mkdir(mode=0o755)
    marker = tmp_path / "ran"
    good = script(trusted, "hook", f"echo good >> {marker}\n", 0o755)
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir(mode=0o755)
    evil = script(evil_dir, "hook", f"echo evil >> {marker}\n", 0o755)
    user_dir = tmp_path / "user-dir"
    user_dir.mkdir(mode=0o755)
    link = user_dir / "hook"
    link.symlink_to(good)
    os.chown(user_dir, 65534, 65534)
    assert "owned by uid 65534" in (check_script(str(link)) or "")
    runner = TriggerRunner({"page_retired": str(link)}, 5.0)
    assert runner.fire("page_retired", {"pfn": 1}) is False
    link.unlink()
    link.symlink_to(evil)  # what the user does next
    assert runner.fire("page_retired", {"pfn": 2}) is False
    [first, second] = wait_outcomes(runner, 2)
    assert first.refused and second.refused
    assert not marker.exists()


def test_a_link_a_user_owns_in_a_sticky_directory_is_refused(tmp_path: Path) -> None:
    # /tmp-like: anyone may create a link there, so only a link of an allowed uid is followed.
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)  # noqa: S103 - a sticky world-writable directory is the point
    trusted = tmp_path / "trusted"
    trusted.mkdir(mode=0o755)
    good = script(trusted, "hook", "exit 0\n", 0o755)
    link = sticky / "hook"
    link.symlink_to(good)
    assert check_script(str(link)) is None
    os.lchown(link, 65534, 65534)
    assert "link" in (check_script(str(link)) or "") and "uid 65534" in (
        check_script(str(link)) or ""
    )


def test_root_owned_links_on_the_way_are_followed(tmp_path: Path) -> None:
    # Debian 12 is merged-/usr: /bin is a root-owned link to usr/bin, and hooks live there.
    assert check_script("/bin/true") is None
    assert check_script("/usr/bin/../bin/true") is None
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert check_script(str(loop)) == "too many levels of symbolic links"


def test_the_script_runs_from_the_descriptor_that_was_checked(bindir: Path) -> None:
    # Replacing the file after the check (as root could) changes nothing for a start already
    # under way; here: the queued start re-checks, runs the checked file, and the #! script
    # sees its environment.
    out = bindir / "out"
    path = script(bindir, "hook", f'echo "$HWPOISOND_PFN $0 $HWPOISOND_SCRIPT" > {out}\n')
    runner = TriggerRunner({"page_retired": str(path)}, 5.0, allowed_uids=UIDS)
    assert runner.fire("page_retired", {"pfn": 7}) is True
    [outcome] = wait_outcomes(runner, 1)
    assert outcome.returncode == 0
    pfn, argv0, script_path = out.read_text().split()
    assert pfn == "7" and argv0.startswith("/proc/self/fd/") and script_path == str(path)
