"""The agent's TLS files (its serving certificate, its key, the CA it trusts the operator
by): what is served now, and their replacement by a certificate put over the channel.

Why files at all: `ssl` loads certificates only from files, and the agent must come back
after a restart with the certificate it was last given (cloud-init runs once per
instance: the one it wrote at first boot may have expired since). So a new certificate
replaces the files its identity names, and only after the new set loaded into a TLS
context: one that does not load (a key of another certificate, a truncated PEM) changes
nothing. Each file is written to a temporary file beside it, fsynced and renamed over it,
then the folder is fsynced; the key is renamed before the certificate, the CA last. A
crash between two renames can leave a key with the certificate it replaces (the agent
then refuses to start its channel, saying why: the operator's next certificate mends it
only once it can connect, so the window is kept to two renames).

`_lock` serializes replacements; it is a leaf (held across the writes, no other lock
taken, no event emitted under it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import threading

from guestha.protocol import TYPE_CHECKING
from guestha.protocol.fields import FieldError
from guestha.protocol.tls import TlsStatus, TlsUpdate

if TYPE_CHECKING:
    from typing import Callable

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Loader = Callable[[str, str, str], ssl.SSLContext]  # (cert, key, ca) -> server context


def _read_status(path: str) -> TlsStatus | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return TlsStatus.of(f.read())
    except (OSError, FieldError) as e:
        log.warning("cannot read the validity of %s: %s", path, e)
        return None


def _stage(text: str, final: str, mode: int) -> str:
    folder = os.path.dirname(final) or "."
    # not tempfile (it would stay in the agent's memory with random): an exclusive
    # create under a random name does the same
    tmp = os.path.join(folder, f".tls-{os.getpid()}-{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _fsync_folder(path: str) -> None:
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TlsFiles:
    """The identity's TLS files (see the module docstring)."""

    def __init__(self, cert: str, key: str, ca: str) -> None:
        self.cert, self.key, self.ca = cert, key, ca
        self._lock = threading.Lock()
        self.served: TlsStatus | None = _read_status(cert)

    def reread(self) -> TlsStatus | None:
        """After the files were reloaded from disk (SIGHUP)."""
        self.served = _read_status(self.cert)
        return self.served

    def replace(self, update: TlsUpdate, load: Loader) -> tuple[ssl.SSLContext, TlsStatus]:
        """Stores `update` in place of the files once it loads with `load`; returns the
        new context and what it serves. ValueError naming the body's fields when it does
        not load or cannot be stored: then nothing changed."""
        served = TlsStatus.of(update.certificate)
        with self._lock:
            staged: list[tuple[str, str]] = []
            try:
                try:
                    staged.append((_stage(update.key, self.key, 0o600), self.key))
                    staged.append((_stage(update.certificate, self.cert, 0o644), self.cert))
                    if update.ca is not None:
                        staged.append((_stage(update.ca, self.ca, 0o644), self.ca))
                except OSError as e:
                    raise ValueError(f"body: cannot store the new TLS files beside "
                                     f"{self.cert}: {e}") from None
                ca = staged[2][0] if update.ca is not None else self.ca
                try:
                    context = load(staged[1][0], staged[0][0], ca)
                except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                    fields = "body.certificate, body.key" + (", body.ca" if update.ca else "")
                    raise ValueError(f"{fields}: do not load together: {e}") from None
                for tmp, final in staged:
                    os.replace(tmp, final)
                staged = []
                _fsync_folder(self.cert)
            finally:
                for tmp, _ in staged:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
            self.served = served
        return context, served
