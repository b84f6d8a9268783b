"""Whether a pid from a pid file is the application's (agent/resources/pidfiles.py): the
rule that decides what the agent, as root, may SIGKILL at clean."""

from __future__ import annotations

import pytest

from guestha.agent.resources.pidfiles import GONE, OURS, WRONG, Seen, judge

pytestmark = pytest.mark.unit

AGENT, APP_UID, WRITTEN = 4242, 1000, 1_000_000.0


@pytest.mark.parametrize(("pid", "seen", "expected_uid", "written", "writer", "verdict",
                          "words"), [
    # the application's own: its user's, started before the file was written
    (500, Seen(True, (1000, 1000), WRITTEN - 5), APP_UID, WRITTEN, 1000, OURS, "pid 500"),
    # start times are not exact: a second of slack
    (500, Seen(True, (1000, 1000), WRITTEN + 0.5), APP_UID, WRITTEN, 1000, OURS, ""),
    # never init, never the agent, whoever wrote it
    (1, Seen(True, (0, 0), 0.0), 0, WRITTEN, 0, WRONG, "init"),
    (0, Seen(False), APP_UID, WRITTEN, 1000, WRONG, "not a process"),
    (-1, Seen(False), APP_UID, WRITTEN, 1000, WRONG, "not a process"),
    (AGENT, Seen(True, (0, 0), WRITTEN - 5), 0, WRITTEN, 0, WRONG, "the agent itself"),
    # a root process named by the user's pid file
    (600, Seen(True, (0, 0), WRITTEN - 5), APP_UID, WRITTEN, 1000, WRONG, "runs as uid 0"),
    # another user's process, or one that changed only its effective uid
    (600, Seen(True, (1001, 1001), WRITTEN - 5), APP_UID, WRITTEN, 1000, WRONG, "uid 1001"),
    (600, Seen(True, (1000, 0), WRITTEN - 5), APP_UID, WRITTEN, 1000, WRONG, "uid 0"),
    # a root application's process is root's ...
    (700, Seen(True, (0, 0), WRITTEN - 5), 0, WRITTEN, 0, OURS, ""),
    # ... and, with root's own pid file, a daemon that dropped its privileges is too
    (700, Seen(True, (33, 33), WRITTEN - 5), 0, WRITTEN, 0, OURS, ""),
    # but not when the pid file is someone else's
    (700, Seen(True, (33, 33), WRITTEN - 5), 0, WRITTEN, 33, WRONG, "uid 33"),
    # gone, or the pid went to a process that started after the file was written
    (800, Seen(False), APP_UID, WRITTEN, 1000, GONE, "not running"),
    (800, Seen(True, (1000, 1000), WRITTEN + 60), APP_UID, WRITTEN, 1000, GONE,
     "started after the pid file was written"),
    # found by its command line (no pid file): the user check alone
    (900, Seen(True, (1000, 1000), WRITTEN + 60), APP_UID, None, None, OURS, ""),
    (900, Seen(True, (0, 0), WRITTEN), APP_UID, None, None, WRONG, "uid 0"),
])
def test_whose_pid(pid: int, seen: Seen, expected_uid: int, written: float | None,
                   writer: int | None, verdict: str, words: str) -> None:
    got, why = judge(pid, seen, expected_uid, AGENT, written, writer)
    assert (got, words in why) == (verdict, True), why


def test_only_the_applications_own_may_be_signalled() -> None:
    """Whatever the inputs, OURS needs a running process of the expected user (or a root
    application's root-written file), neither init nor the agent."""
    for pid in (-1, 0, 1, 2, AGENT):
        for uids in ((0, 0), (1000, 1000), (0, 1000), None):
            for expected in (0, 1000):
                for writer in (0, 1000, None):
                    for running in (False, True):
                        seen = Seen(running, uids, WRITTEN - 1)
                        got, _ = judge(pid, seen, expected, AGENT, WRITTEN, writer)
                        if got != OURS:
                            continue
                        assert pid > 1 and pid != AGENT and running and uids is not None
                        assert set(uids) == {expected} or (expected == 0 and writer == 0)
