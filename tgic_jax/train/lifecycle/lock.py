"""One run per workdir: a lock file that a second run on the same workdir is refused by.

Two runs on one workdir interleave their checkpoints and the second died in orbax's
temporary folder with a traceback. The lock is an advisory `flock` on workdir/.lock, so
the kernel releases it when the run ends however it ends (SIGKILL included): there is no
stale lock to remove by hand. Object-store workdirs (gs://) have no such lock and are not
locked. On several hosts only process 0 locks (the others share its workdir).
"""

from __future__ import annotations

import os

from tgic_jax.train.lifecycle.errors import RunError

LOCK_FILE = ".lock"


class WorkdirBusy(RunError):
    """Another run holds the workdir's lock."""


class WorkdirLock:
    """Holds workdir/.lock from `acquire` until `release` (or the process ends)."""

    def __init__(self, workdir):
        self._workdir = workdir
        self._fd = None

    def acquire(self) -> None:
        """Takes the lock, or raises WorkdirBusy naming the run that holds it."""
        if "://" in str(self._workdir):
            return
        import fcntl

        path = os.path.join(str(self._workdir), LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise WorkdirBusy(
                f"{self._workdir} is in use by another training run ({holder}); "
                "wait for it, or use another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
        self._fd = fd

    def release(self) -> None:
        """Lets another run have the workdir."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
