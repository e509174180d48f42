"""Recovery must not kill an unrelated process group that reuses a dead trial's pid.

Found by attack (pid reuse): the trial's leader (pid 4242) died with
the daemon; later a process of the same user got pid 4242, led a new group
(``setsid sh -c 'worker & exit'``: a launcher that backgrounds its job and exits)
and left its job in group 4242 with no leader. The next daemon's
``kill_leftovers`` takes any process in group 4242 younger than the trial, whose
leader is gone, for the trial's orphan: it SIGKILLs the unrelated job. The
group id is a pid too, and a pid alone is not evidence.

The rule cannot simply ask for ``TUNED_TRIAL_ID`` in the orphan's environment:
a trial run by a zygote's spare (the default) gets its trial variables after
the fork, so neither it nor what it forks (DataLoader workers) shows them in
``/proc/PID/environ`` (checked: a forked child of such a trial had none). The
fix this test waits for: the zygote's exec-time environment carries a marker
unique to the daemon that started it (journalled with each trial), inherited by
every spare and its forks; an orphan in a dead leader's group is killed only if
it carries that marker (or the trial's id).
"""

from __future__ import annotations

from tuned.run.leftovers import Proc, Target, select

UID, ME = 1000, 1
T0 = 1_000_000.0
TRIAL = Target("abcde_00000", pid=4242, started=T0)


MARKER = "/home/u/.local/state/tuned"


def test_a_reused_pids_orphaned_group_is_left_alone() -> None:
    # pid 4242 was reused an hour later by a launcher that started its own group,
    # backgrounded a job in it and exited; the job has no tuned variables at all.
    job = Proc(6001, 4242, UID, T0 + 3600)
    assert select([TRIAL], [job], own_pid=ME, own_uid=UID, marker=MARKER) == []
    other_daemons = Proc(6002, 4242, UID, T0 + 60, marker="/elsewhere/state")
    assert select([TRIAL], [other_daemons], own_pid=ME, own_uid=UID, marker=MARKER) == []


def test_an_orphan_of_the_trial_carries_the_daemons_marker_and_is_killed() -> None:
    """A DataLoader worker forked by a forked trial: no trial id, but the zygote's marker."""
    worker = Proc(6003, 4242, UID, T0 + 30, marker=MARKER)
    assert select([TRIAL], [worker], own_pid=ME, own_uid=UID, marker=MARKER) == [6003]
