"""Recovery kills what a dead daemon left running, and nothing that only shares a pid.

``leftovers.select`` reads a table of processes; these tables are made up, so
each case of pid reuse can be set up exactly. One end-to-end case runs the real
scan on real processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from tuned.run.leftovers import Proc, Target, kill_leftovers, select

ME, UID, OTHER_UID = 999_999, 1000, 1001
T0 = 1_000_000.0  # when the trial started
TRIAL = Target("abcde_00000", pid=4242, started=T0)


MARK = "/state"


def chosen(*rows: Proc) -> list[int]:
    return select([TRIAL], rows, own_pid=ME, own_uid=UID, marker=MARK)


def test_the_trial_leader_and_its_group_are_killed() -> None:
    leader = Proc(4242, 4242, UID, T0 + 0.2)
    child = Proc(5000, 4242, UID, T0 + 30)
    assert chosen(leader, child) == [4242, 5000]


def test_a_reused_leader_pid_and_its_group_are_left_alone() -> None:
    """The trial's pid now belongs to a younger process that leads its own group."""
    stranger = Proc(4242, 4242, UID, T0 + 3600)
    its_child = Proc(6000, 4242, UID, T0 + 3601)
    assert chosen(stranger, its_child) == []


def test_orphans_of_a_dead_leader_are_killed() -> None:
    orphan = Proc(5001, 4242, UID, T0 + 5, marker=MARK)  # its leader died with the daemon
    assert chosen(orphan) == [5001]


def test_a_process_older_than_the_trial_is_left_alone() -> None:
    older = Proc(5002, 4242, UID, T0 - 60)
    assert chosen(older) == []


def test_the_trial_id_in_the_environment_decides_outside_the_group() -> None:
    escaped = Proc(7000, 7000, UID, T0 + 10, trial_id="abcde_00000")  # setsid'd away
    elsewhere = Proc(7001, 4242, UID, T0 + 10, trial_id="fffff_00003")  # another trial's
    assert chosen(escaped, elsewhere) == [7000]


def test_other_users_zombies_and_the_daemon_itself_are_never_chosen() -> None:
    theirs = Proc(8000, 4242, OTHER_UID, T0 + 1)
    zombie = Proc(8001, 4242, UID, T0 + 1, zombie=True)
    me = Proc(ME, 4242, UID, T0 + 1)
    assert chosen(theirs, zombie, me) == []


def test_the_real_scan_kills_a_trials_group_and_spares_a_bystander() -> None:
    """A 'trial' leading its own session with a child, and an unrelated process beside it."""
    trial = subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        started = time.time()
        killed = kill_leftovers([Target("zzzzz_00000", trial.pid, started)])
        assert killed >= 1
        assert trial.wait(timeout=10) == -9
        assert bystander.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(trial.pid, signal.SIGKILL)  # a child that started after the scan
        for proc in (trial, bystander):
            proc.kill()
            proc.wait()
