"""File-system questions about users' paths, asked in a child process that can be killed.

A path on a dead hard NFS mount, or under a FUSE server that hangs, blocks whoever looks
at it (realpath, stat, open, chdir, exec) until the server answers, which may be never.
In one of the agent's own threads that is a resource that never finishes its monitor,
clean or offline, and so a member that cannot fence. So the agent never touches a path a
user configured (a mount point, a device, a working directory, a pid file, a command)
itself: a short-lived `python3 -I -S` child does, within the action's timeout, and is
killed (SIGKILL to its process group) when it does not answer in time. Paths under /proc
and the agent's own state folder are read directly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from guestha.protocol import TYPE_CHECKING

from .base import ActionError
from .programs import Account, run

if TYPE_CHECKING:
    from typing import Any

    from .base import Resource

READ_LIMIT = 64  # bytes of a file's start read for `read` (a pid file)

# The child: one JSON request in argv[1], one JSON answer on stdout.
_CHILD = r"""
import json, os, stat, sys
req = json.loads(sys.argv[1])
def look(p, read):
    out = {"path": p, "real": os.path.realpath(p)}
    try:
        st = os.stat(p)
    except OSError as e:
        out["error"] = e.strerror or str(e)
        return out
    out["mode"], out["uid"], out["mtime"] = st.st_mode, st.st_uid, st.st_mtime
    if stat.S_ISBLK(st.st_mode):
        out["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    out["access"] = os.access(p, os.X_OK)
    if read and stat.S_ISREG(st.st_mode):
        try:
            with open(p, "rb") as f:
                out["content"] = f.read(read).decode("ascii", "replace")
        except OSError as e:
            out["readError"] = e.strerror or str(e)
    return out
op = req["op"]
if op == "look":
    answer = [look(p, req.get("read", 0)) for p in req["paths"]]
elif op == "mkdir":
    try:
        os.makedirs(req["path"], exist_ok=True)
        answer = {}
    except OSError as e:
        answer = {"error": e.strerror or str(e)}
sys.stdout.write(json.dumps(answer))
"""


@dataclass(frozen=True)
class PathFacts:
    """What the child found about one path."""

    path: str
    real: str  # os.path.realpath
    error: str = ""  # why stat failed (e.g. "No such file or directory")
    mode: int = 0
    uid: int | None = None
    mtime: float | None = None
    rdev: str | None = None  # "major:minor" when it is a block device
    executable: bool = False  # os.access X_OK, for whoever the child ran as
    content: str | None = None  # the start of a regular file, when asked for
    read_error: str = ""  # why it could not be read

    @property
    def exists(self) -> bool:
        return not self.error

    @property
    def is_dir(self) -> bool:
        return (self.mode & 0o170000) == 0o040000

    @property
    def is_file(self) -> bool:
        return (self.mode & 0o170000) == 0o100000


def _python() -> str:
    return sys.executable or "python3"


def _ask(request: dict[str, Any], timeout: float, what: str, user: Account | None,
         owner: Resource | None) -> Any:
    done = run([_python(), "-I", "-S", "-c", _CHILD, json.dumps(request)], timeout,
               f"{what} (a file system check)", user=user, owner=owner, keep=1 << 20,
               stderr=False)
    if done.returncode != 0:
        raise ActionError(f"{what}: the file system check failed (status {done.returncode})")
    try:
        return json.loads(done.output)
    except ValueError:
        raise ActionError(f"{what}: the file system check answered {done.tail(100)!r}"
                          ) from None


def _facts(raw: dict[str, Any]) -> PathFacts:
    return PathFacts(path=raw["path"], real=raw["real"], error=raw.get("error", ""),
                     mode=raw.get("mode", 0), uid=raw.get("uid"), mtime=raw.get("mtime"),
                     rdev=raw.get("rdev"), executable=bool(raw.get("access")),
                     content=raw.get("content"), read_error=raw.get("readError", ""))


def look(paths: Sequence[str], timeout: float, what: str, *, read: bool = False,
         user: Account | None = None, owner: Resource | None = None) -> list[PathFacts]:
    """realpath, stat (and with `read`, the first READ_LIMIT bytes) of each path, within
    `timeout` (ActionTimeout otherwise), as `user` when given (access checks are theirs)."""
    answer = _ask({"op": "look", "paths": list(paths), "read": READ_LIMIT if read else 0},
                  timeout, what, user, owner)
    return [_facts(item) for item in answer]


def makedirs(path: str, timeout: float, what: str, owner: Resource | None = None) -> str:
    """Create a directory and its parents; '' or why it could not be created."""
    answer = _ask({"op": "mkdir", "path": path}, timeout, what, None, owner)
    return str(answer.get("error", ""))


# A start check as the user who runs the program, in /bin/sh (the agent's interpreter may
# not be theirs to run): enter the directory, find the command as exec would.
_START_CHECK = r"""
cd -- "$1" 2>/dev/null || exit 3
case "$2" in
*/*) [ -e "$2" ] || exit 4; [ -d "$2" ] && exit 5; [ -x "$2" ] || exit 5; exit 0 ;;
esac
denied=
IFS=:
for dir in $3; do
    [ -n "$dir" ] || dir=.
    if [ -f "$dir/$2" ]; then
        [ -x "$dir/$2" ] && exit 0
        denied=1
    fi
done
[ -n "$denied" ] && exit 5
exit 4
"""
CANNOT_ENTER, NOT_FOUND, NOT_EXECUTABLE = 3, 4, 5


def check_start(cwd: str, command: str, search_path: str, timeout: float, what: str, *,
                user: Account | None = None, owner: Resource | None = None) -> int:
    """0 when `user` can enter `cwd` and run `command` there (found through `search_path`
    unless it has a slash); else CANNOT_ENTER, NOT_FOUND or NOT_EXECUTABLE."""
    done = run(["/bin/sh", "-c", _START_CHECK, "sh", cwd, command, search_path], timeout,
               f"{what} (a file system check)", user=user, owner=owner)
    return done.returncode
