"""One run at a time per output folder: a lock file held for the run, released however it ends.

Two ``batch`` runs into one folder would both compute every case and overwrite each other's
tables; the second one is refused at once instead, with a one-line message naming the first.
The lock is ``fcntl.flock`` on a file in the folder, so the kernel releases it when its holder dies
(even by ``kill -9``): a stale lock file never blocks the next run. Where ``fcntl`` does not exist
(Windows) runs are not locked.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError

LOCK_FILE = ".saliency-inspector.lock"


@contextmanager
def output_lock(folder, what: str = "batch"):
    """Hold the lock of ``folder`` (an existing folder) for the block; :class:`InputError` when
    another process holds it. The lock file is removed when the block ends."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        yield
        return
    path = Path(folder) / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: held by another run
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InputError(f"{folder}: another {what} run (process {holder}) is writing into this folder; "
                             "wait for it to finish or give another --out") from None
        try:  # the holder before us may have removed the file we opened: then lock the new one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it, so no one locks the removed file
        os.close(fd)
