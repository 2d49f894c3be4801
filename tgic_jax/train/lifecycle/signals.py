"""Signals before the first step: SIGTERM and SIGINT end the process at once, with one line.

Until the loop runs there is nothing to save (the newest checkpoint is the run's state), so
a preemption or a Ctrl-C during start-up should not wait for the minutes-long compilation.
It would: Python runs its handlers between bytecodes of the main thread, which sits in
XLA's compiler, and with `jax.distributed` JAX's preemption notifier owns SIGTERM and is
only read at the loop's first sync point. So during start-up Python's C-level handler only
writes the signal number to a pipe (`signal.set_wakeup_fd`), and a thread that waits on it
prints one line and exits. Afterwards each signal gets back the exact C-level action it had
(`sigaction`, through ctypes): Python's `signal.signal` cannot reinstall a handler that
was set outside Python, such as JAX's notifier.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_SIGACTION_BYTES = 256  # >= sizeof(struct sigaction) on Linux and macOS; kept opaque


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def read_sigaction(signum: int) -> bytes:
    """The signal's current C-level action, as the opaque bytes of its struct sigaction."""
    action = ctypes.create_string_buffer(_SIGACTION_BYTES)
    if _libc().sigaction(int(signum), None, action) != 0:
        raise OSError(ctypes.get_errno(), f"sigaction({signum}) failed")
    return action.raw


def write_sigaction(signum: int, action: bytes) -> None:
    """Installs an action read by `read_sigaction`."""
    buffer = ctypes.create_string_buffer(action, _SIGACTION_BYTES)
    if _libc().sigaction(int(signum), buffer, None) != 0:
        raise OSError(ctypes.get_errno(), f"sigaction({signum}) failed")


class StartupSignals:
    """Context manager: inside, SIGTERM / SIGINT print `"<SIG> during start-up: <what>"` and
    exit with status 128 + signal number; on leaving, every signal's action is as before.

    Only the main thread can change handlers; elsewhere this does nothing.
    """

    def __init__(self, what: str = "stopping before the first step; nothing to save"):
        self.what = what
        self._active = False

    def __enter__(self) -> StartupSignals:
        if self._active or threading.current_thread() is not threading.main_thread():
            return self  # entered already (train.py's guard, handed to the trainer)
        self._saved = {sig: (signal.getsignal(sig), read_sigaction(sig)) for sig in SIGNALS}
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # set_wakeup_fd requires it
        for sig in SIGNALS:
            signal.signal(sig, _wake_only)
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._lock = threading.Lock()
        self._closing = False
        self._pending: list[int] = []
        self._watcher = threading.Thread(target=self._watch, name="startup-signals", daemon=True)
        self._watcher.start()
        self._active = True
        return self

    def _watch(self) -> None:
        while data := os.read(self._read_fd, 1):  # b"" once __exit__ closes the write end
            with self._lock:
                if not self._closing:
                    name = signal.Signals(data[0]).name
                    print(f"{name} during start-up: {self.what}", file=sys.stderr, flush=True)
                    os._exit(128 + data[0])
                self._pending.append(data[0])  # landed while leaving: re-raised after
        os.close(self._read_fd)

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Leaves the start-up (once; later calls do nothing)."""
        if not self._active:
            return
        self._active = False
        with self._lock:
            self._closing = True
        for sig, (python_handler, action) in self._saved.items():
            # Python's record first (its table must name the handler it will run), then the
            # exact C-level action, which may be a handler installed outside Python.
            if python_handler is not None:
                signal.signal(sig, python_handler)
            write_sigaction(sig, action)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._write_fd)
        self._watcher.join(timeout=5)
        for signum in self._pending:  # a signal that landed while leaving is not lost
            signal.raise_signal(signum)


def _wake_only(signum, frame) -> None:
    """Python-level handler of the start-up: the wakeup pipe has already carried the signal."""
    del signum, frame
