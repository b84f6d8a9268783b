"""The guest's systemctl, systemd-run, journalctl and cloud-init commands, and their wire.

Each of these commands is a shell shim (``pid1.shim``) that runs this module alone from the
guest's zipapp: it sends its argv to PID 1's control socket and prints PID 1's answer.
guestha's agent runs ``systemctl show`` at every monitor of a Systemd resource and scripts
call systemctl in loops, so a call should cost the interpreter's start-up and little more:
this module imports only ``os``, ``sys`` and ``_socket``; never the rest of the package,
nor ``json``, ``re``, ``socket`` or ``typing`` (they pull in ``enum`` and ``re``, which cost
more than the rest of the call; hack/bench/guestinit.py measures it). ``_socket`` is
CPython's own socket type that ``socket`` wraps; the guest runs the host's CPython.

The wire, defined here once for both ends (PID 1's side is ``tools.ControlServer``): one
connection per call. The request is ``tool``, ``cwd`` and the argv, NUL-separated (argv
words cannot hold NUL), UTF-8 with surrogate escapes, ended by the client's half-close. The
reply is a header line ``RC OUT_LENGTH`` then OUT_LENGTH bytes of stdout, then stderr up to
the end of the connection.
"""

from __future__ import annotations

import _socket
import os
import sys

RUN_DIR = "/run/guesthost"  # PID 1's private run folder in the guest
CONTROL_SOCK = f"{RUN_DIR}/control.sock"
TOOLS = ("systemctl", "systemd-run", "journalctl", "cloud-init")
MAX_MESSAGE = 4 << 20  # bytes: a request or reply beyond this is refused

# systemd-run options that take a value: the command starts after them. The client needs
# it to resolve the command in the caller's PATH; tools.systemd_run uses the same table.
SYSTEMD_RUN_VALUED_OPTIONS = frozenset(
    {
        "-u",
        "--unit",
        "-p",
        "--property",
        "--description",
        "--service-type",
        "-E",
        "--setenv",
        "--working-directory",
        "--uid",
        "--gid",
        "--slice",
        "--on-active",
    }
)


class WireError(ValueError):
    """A request or reply that does not follow the wire format above."""


class Reply:
    """A command's answer: exit code, stdout lines, stderr lines."""

    __slots__ = ("err", "out", "rc")

    def __init__(
        self, rc: int = 0, out: list[str] | None = None, err: list[str] | None = None
    ) -> None:
        self.rc = rc
        self.out: list[str] = out if out is not None else []
        self.err: list[str] = err if err is not None else []

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reply) and (self.rc, self.out, self.err) == (
            other.rc,
            other.out,
            other.err,
        )

    def __repr__(self) -> str:
        return f"Reply({self.rc!r}, {self.out!r}, {self.err!r})"

    def text(self) -> tuple[str, str]:
        """stdout and stderr as the command prints them: one line each, newline-ended."""
        return _lines(self.out), _lines(self.err)


def _lines(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def encode_request(tool: str, argv: list[str], cwd: str) -> bytes:
    words = [tool, cwd, *argv]
    for word in words:
        if "\0" in word:
            raise WireError(f"argument {word!r} holds a NUL character")
    return b"\0".join(_encode(word) for word in words)


def decode_request(data: bytes) -> tuple[str, list[str], str]:
    """(tool, argv, cwd) of a request."""
    words = [_decode(word) for word in data.split(b"\0")]
    if len(words) < 2 or words[0] not in TOOLS:
        raise WireError(f"request names no known tool ({', '.join(TOOLS)}): {words[:1]!r}")
    return words[0], words[2:], words[1] or "/"


def encode_reply(reply: Reply) -> bytes:
    out, err = reply.text()
    out_bytes = _encode(out)
    return b"%d %d\n" % (reply.rc, len(out_bytes)) + out_bytes + _encode(err)


def decode_reply(data: bytes) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a reply."""
    header, newline, body = data.partition(b"\n")
    fields = header.split()
    if not newline or len(fields) != 2 or not all(f.lstrip(b"-").isdigit() for f in fields):
        raise WireError(f"reply header {header[:40]!r} is not 'RC OUT_LENGTH'")
    rc, length = int(fields[0]), int(fields[1])
    if length > len(body):
        raise WireError(f"reply ends after {len(body)} of {length} bytes of output")
    return rc, _decode(body[:length]), _decode(body[length:])


def read_all(sock: _socket.socket) -> bytes:
    """Everything the peer sends until it closes its side (at most MAX_MESSAGE bytes)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_MESSAGE:
            raise WireError(f"message longer than {MAX_MESSAGE} bytes")
        chunks.append(chunk)


def command_start(argv: list[str]) -> int:
    """Index of the command in a systemd-run argv: the first word that is no option or an
    option's value."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return i + 1
        if not arg.startswith("-"):
            return i
        if arg in SYSTEMD_RUN_VALUED_OPTIONS:
            i += 1
        i += 1
    return len(argv)


def which(name: str) -> str | None:
    """The absolute path of the executable `name`: a name with a slash relative to the
    working directory, a bare name found in PATH (systemd-run's rule); None if it is none."""
    folders = [""] if "/" in name else os.environ.get("PATH", os.defpath).split(os.pathsep)
    for folder in folders:
        path = os.path.abspath(os.path.join(folder, name))
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def call(tool: str, argv: list[str], cwd: str, path: str = CONTROL_SOCK) -> tuple[int, str, str]:
    """Ask PID 1 (its control socket at `path`); (exit code, stdout, stderr).
    Raises OSError when PID 1 does not answer, WireError on a garbled answer."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.sendall(encode_request(tool, argv, cwd))
        sock.shutdown(_socket.SHUT_WR)
        return decode_reply(read_all(sock))
    finally:
        sock.close()


def main(argv: list[str]) -> int:
    """A guest command: `argv[1]` is the tool, the rest its arguments."""
    if len(argv) < 2 or argv[1] not in TOOLS:
        sys.stderr.write(f"usage: guestinit.pyz {'|'.join(TOOLS)} ARGS... | boot GUEST_DIR\n")
        return 2
    tool, args = argv[1], argv[2:]
    if tool == "systemd-run":
        start = command_start(args)
        if start < len(args) and not args[start].startswith("/"):
            found = which(args[start])
            if found is None:
                sys.stderr.write(
                    f"Failed to find executable {args[start]}: No such file or directory\n"
                )
                return 1
            args = [*args[:start], found, *args[start + 1 :]]
    try:
        rc, out, err = call(tool, args, os.getcwd())
    except OSError as exc:
        sys.stderr.write(
            f"{tool}: System has not been booted by the simulated init "
            f"({CONTROL_SOCK}: {exc.strerror or exc})\n"
        )
        return 1
    except WireError as exc:
        sys.stderr.write(f"{tool}: garbled answer from the simulated init: {exc}\n")
        return 1
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc
