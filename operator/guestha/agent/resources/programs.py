"""Running entry point programs (start/stop/monitor scripts, OCF agents, mount, ip, systemctl).

Every program runs in a session of its own with its output in a temporary file, not a
pipe: a start script that leaves a daemon behind would otherwise hold the pipe open and
hang the agent. On timeout the whole process group is killed, and the agent waits for it
to go for KILL_WAIT_SECONDS at most (a process stuck in the kernel on a dead mount may
never go: it is left behind, not waited for). Programs run as the resource's `user` when
one is given, with a small predictable environment.

A working directory other than / is entered by /bin/sh in the child (`cd`, then `exec`),
not by Popen: Popen waits until its child has run exec, and a chdir or exec on a dead
mount would make that wait, in the agent's thread, last for ever (see fsprobe.py).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from guestha.protocol import TYPE_CHECKING

from .base import ActionAborted, ActionError, ActionTimeout

if TYPE_CHECKING:
    from typing import IO, Any

    from .base import Resource

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_LIMIT = 2000  # characters of a program's output kept for messages
KILL_WAIT_SECONDS = 2.0  # how long a killed program's end is waited for
SHELL = "/bin/sh"
# argv prefix that enters a working directory in the child, then runs the program there
ENTER_FAILED = "guestha: cannot enter the working directory"
ENTER = [SHELL, "-c", f'cd -- "$1" 2>/dev/null || {{ echo "{ENTER_FAILED} $1" >&2; exit 126; }}'
         '; shift; exec "$@"', "sh"]


def entering(cwd: str | None, argv: Sequence[str]) -> list[str]:
    """`argv` run in `cwd` by a shell in the child (see the module docstring)."""
    if not cwd or cwd == "/":
        return list(argv)
    return [*ENTER, cwd, *argv]


@dataclass(frozen=True)
class Completed:
    """A program that finished: its exit status and the end of its output."""

    returncode: int
    output: str

    def tail(self, limit: int = 300) -> str:
        text = " ".join(self.output.split())
        return text if len(text) <= limit else "..." + text[-limit:]


@dataclass(frozen=True)
class Account:
    """A guest user that programs run as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str


def account(user: str) -> Account:
    """The account of `user` (a name or a numeric uid); ActionError naming `user` if none."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise ActionError(f"attributes.user: no such user {user!r} in this guest") from None
    try:
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        groups = (entry.pw_gid,)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir,
                   entry.pw_shell or "/bin/sh")


def environment(extra: Mapping[str, str] | None = None, user: Account | None = None,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A program's environment: PATH and LANG from the agent, the user's identity, `extra`."""
    source = os.environ if base is None else base
    env = {"PATH": source.get("PATH") or DEFAULT_PATH}
    for key in ("LANG", "LC_ALL", "TZ"):
        if key in source:
            env[key] = source[key]
    if user is not None:
        env.update(HOME=user.home, USER=user.name, LOGNAME=user.name, SHELL=user.shell)
    elif "HOME" in source:
        env["HOME"] = source["HOME"]
    env.update(extra or {})
    return env


def credentials(user: Account | None) -> dict[str, Any]:
    """Popen keyword arguments that make a child run as `user` (nothing for the agent's own)."""
    if user is None or user.uid == os.geteuid():
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}


def output_file() -> IO[bytes]:
    """An unnamed file for a program's output, gone when closed: O_TMPFILE in TMPDIR (else
    /tmp), as tempfile.TemporaryFile makes it. tempfile itself (with shutil and random,
    over half a megabyte of the agent's memory) is imported only where the kernel or the
    file system has no O_TMPFILE."""
    try:
        fd = os.open(os.environ.get("TMPDIR") or "/tmp",
                     os.O_RDWR | os.O_TMPFILE | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except (OSError, AttributeError):
        import tempfile

        return tempfile.TemporaryFile()
    return open(fd, "w+b")


@contextlib.contextmanager
def _stdin(data: bytes | None) -> Iterator[Any]:
    """What a program reads: nothing (/dev/null), or `data` from an unnamed file (a file,
    not a pipe: the agent never blocks writing to a child that does not read)."""
    if data is None:
        yield subprocess.DEVNULL
        return
    with output_file() as f:
        f.write(data)
        f.seek(0)
        yield f


def _read_tail(f: Any, keep: int = OUTPUT_LIMIT) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - keep * 4))
    data: bytes = f.read()
    return data.decode("utf-8", "replace")[-keep:]


def run(argv: Sequence[str], timeout: float, what: str, *, env: Mapping[str, str] | None = None,
        cwd: str | None = None, user: Account | None = None,
        owner: Resource | None = None, keep: int = OUTPUT_LIMIT,
        stderr: bool = True, stdin: bytes | None = None) -> Completed:
    """Run `argv` to its end within `timeout` seconds; `what` names it in errors.

    It reads `stdin` (nothing when None). The last `keep` characters of its output (with
    stderr unless `stderr` is False) are returned. Raises ActionTimeout (after killing the
    program's process group) or ActionError when the program cannot be started. A non-zero
    exit status is returned.
    """
    with output_file() as out, _stdin(stdin) as source:
        try:
            proc = subprocess.Popen(
                entering(cwd, argv), stdin=source, stdout=out,
                stderr=subprocess.STDOUT if stderr else subprocess.DEVNULL,
                env=dict(env) if env is not None else environment(), cwd="/",
                start_new_session=True, close_fds=True, **credentials(user))
        except FileNotFoundError:
            raise ActionError(f"{what}: {argv[0]}: not found") from None
        except PermissionError:
            raise ActionError(f"{what}: {argv[0]}: permission denied") from None
        except OSError as e:
            raise ActionError(f"{what}: cannot run {argv[0]}: {e.strerror or e}") from None
        if owner is not None:
            owner.track(proc.pid)
        aborted = False
        try:
            try:
                returncode = proc.wait(timeout=max(timeout, 0.001))
            except subprocess.TimeoutExpired:
                ended = _kill_group(proc)
                raise ActionTimeout(f"{what} did not finish within {timeout:g} s "
                                    f"({'killed' if ended else 'killed, and still there'}):"
                                    f" {Completed(-9, _read_tail(out)).tail()}") from None
        finally:
            if owner is not None:
                aborted = owner.untrack(proc.pid)
        if aborted:
            raise ActionAborted(f"{what} was aborted")
        done = Completed(returncode, _read_tail(out, keep))
        if cwd and cwd != "/" and returncode == 126 and ENTER_FAILED in done.output:
            raise ActionError(f"{what}: cannot enter the working directory {cwd} (attributes."
                              f"workingDirectory): it is not a directory it may enter")
        return done


def _kill_group(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the program's process group; True if it ended within KILL_WAIT_SECONDS.

    One that did not (stuck in the kernel, e.g. on a dead mount) is left behind: the
    subprocess module reaps it later, whenever it ends."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=KILL_WAIT_SECONDS)
        return True
    except subprocess.TimeoutExpired:
        return False


def shell(command: str, timeout: float, what: str, **kwargs: Any) -> Completed:
    """Run a shell command line (VCS-style StartProgram etc.) with /bin/sh -c."""
    return run(["/bin/sh", "-c", command], timeout, what, **kwargs)
