"""Signals before the first step end the process at once; afterwards each handler is as before."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="struct sigaction layout: glibc")


def _run(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_exits_at_once_with_one_line(sig):
    # The main thread is busy (as in XLA's compiler) and never returns to run a handler.
    proc = _run("""
        import time
        from tgic_jax.train.startup_signals import StartupSignals
        with StartupSignals("stopping before step 41; nothing to save"):
            print("ready", flush=True)
            time.sleep(60)
        print("left the start-up", flush=True)
    """)
    assert proc.stdout.readline() == "ready\n"
    sent = time.perf_counter()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert time.perf_counter() - sent < 5
    assert proc.returncode == 128 + sig and out == ""
    assert err == f"{sig.name} during start-up: stopping before step 41; nothing to save\n"


def test_leaving_start_up_gives_back_each_signals_exact_action_jaxs_notifier_included():
    # jax.distributed installs its preemption notifier from C++, where Python's
    # signal.signal cannot put it back; the notice must still reach the sync point after.
    proc = _run("""
        import os, signal, socket, time
        import jax
        from jax.experimental import multihost_utils
        from tgic_jax.train.startup_signals import StartupSignals, read_sigaction

        def action(sig):  # glibc: handler, the kernel's 64-bit mask, flags less SA_RESTORER
            raw = read_sigaction(sig)
            return raw[:16], int.from_bytes(raw[136:140], "little") & ~0x04000000

        signal.signal(signal.SIGINT, signal.default_int_handler)
        with socket.socket() as s:
            s.bind(("localhost", 0))
            port = s.getsockname()[1]
        jax.distributed.initialize(f"localhost:{port}", num_processes=1, process_id=0)
        before = {sig: action(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        with StartupSignals():
            assert action(signal.SIGTERM) != before[signal.SIGTERM]
        assert {sig: action(sig) for sig in before} == before
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        os.kill(os.getpid(), signal.SIGTERM)
        for step in range(300):  # the notice travels through the coordination service
            if multihost_utils.reached_preemption_sync_point(step):
                print("preemption noticed", flush=True)
                break
            time.sleep(0.1)
    """)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert out == "preemption noticed\n"  # JAX's notifier, back in place, got the SIGTERM


def test_a_signal_that_lands_while_leaving_start_up_reaches_the_restored_handler():
    proc = _run("""
        import os, signal
        from tgic_jax.train.startup_signals import StartupSignals

        got = []
        signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
        guard = StartupSignals()
        with guard:
            guard._closing = True  # as __exit__ does first, under its lock
            os.kill(os.getpid(), signal.SIGTERM)
        print(got)
    """)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == f"[{int(signal.SIGTERM)}]" and err == ""
