"""A tiny FUSE file system whose server can hang, as a dead hard NFS server does.

`python3 hangfs.py MOUNTPOINT` opens /dev/fuse, mounts an empty directory on MOUNTPOINT
(source "ghtest-hang", type "fuse.ghtest") and answers the kernel's requests, never
caching attributes (attr_valid 0), so every stat of the mount point asks the server.
SIGSTOP the server and every such stat blocks in the kernel (killably) until SIGCONT or
the server's death, which is what a dead hard NFS mount does to whoever resolves a path
on it. Test tooling (not a test); it speaks just enough of the FUSE protocol: INIT,
GETATTR, LOOKUP (nothing there), STATFS, ACCESS, DESTROY, and ENOSYS for the rest.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
import time

SOURCE, FSTYPE = "ghtest-hang", "fuse.ghtest"
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, ...
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
LOOKUP, FORGET, GETATTR, STATFS, INIT, ACCESS, INTERRUPT, DESTROY, BATCH_FORGET = (
    1, 2, 3, 17, 26, 34, 36, 38, 42)


def mount(point: str) -> int:
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(SOURCE.encode(), point.encode(), FSTYPE.encode(), 0, options) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {point}: {os.strerror(error)}")
    return fd


def attributes() -> bytes:
    now = int(time.time())
    # attr_valid 0: the kernel asks again at every stat. fuse_attr: ino, size, blocks,
    # atime, mtime, ctime, their nsecs, mode, nlink, uid, gid, rdev, blksize, flags.
    attr = struct.pack("<QQQQQQIIIIIIIIII", 1, 0, 0, now, now, now, 0, 0, 0,
                       0o040755, 2, 0, 0, 0, 4096, 0)
    return struct.pack("<QII", 0, 0, 0) + attr


def serve(fd: int) -> None:
    while True:
        try:
            request = os.read(fd, 1 << 20)
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.EBADF):
                return  # unmounted
            if e.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                continue
            raise
        _length, opcode, unique, *_ = IN_HEADER.unpack_from(request)
        if opcode in (FORGET, BATCH_FORGET, INTERRUPT):
            continue  # no answer expected
        error, body = 0, b""
        if opcode == INIT:
            # fuse_init_out of protocol 7.22: major, minor, max_readahead, flags,
            # max_background, congestion_threshold, max_write
            body = struct.pack("<IIIIHHI", 7, 22, 0, 0, 16, 12, 4096)
        elif opcode == GETATTR:
            body = attributes()
        elif opcode == STATFS:
            body = struct.pack("<QQQQQIIII6I", 0, 0, 0, 0, 0, 4096, 255, 4096, 0,
                               *([0] * 6))
        elif opcode == ACCESS:
            pass
        elif opcode == LOOKUP:
            error = -errno.ENOENT
        elif opcode != DESTROY:
            error = -errno.ENOSYS
        os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), error, unique) + body)
        if opcode == DESTROY:
            return


def main() -> None:
    fd = mount(sys.argv[1])
    print("ready", flush=True)
    serve(fd)


if __name__ == "__main__":
    main()
