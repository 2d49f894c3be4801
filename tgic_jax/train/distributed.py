"""Several hosts as one run: starting them and meeting at barriers.

Host start (`maybe_initialize_distributed`, the launcher's process count) and coordination
barriers and agreements (`sync_hosts`, `any_host`, `agree_on_int`). When a run stops
(SIGTERM, SIGINT, its time budget: the same step on every host) is `lifecycle.stop`.
"""

from __future__ import annotations

import importlib.util
import os

import jax
import numpy as np


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


# PCI vendor id of Google's TPU chips: what JAX's own TPU VM detection looks for.
_GOOGLE_PCI_VENDOR = "0x1ae0"


def _tpu_chips_present(sysfs: str = "/sys/bus/pci/devices") -> bool:
    """True when a Google TPU chip sits on this host's PCI bus (public sysfs, no JAX import)."""
    try:
        entries = os.listdir(sysfs)
    except OSError:
        return False
    for entry in entries:
        try:
            with open(os.path.join(sysfs, entry, "vendor")) as f:
                if f.read().strip().lower() == _GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return False


def _on_tpu_vm(sysfs: str = "/sys/bus/pci/devices") -> bool:
    """A Cloud TPU VM (GCE or GKE): its pod env variables, or libtpu and TPU chips present.

    JAX's cluster detection (`jax.distributed.initialize()` with no arguments) then finds
    the pod's coordinator, process count and id itself.
    """
    if os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return True
    return importlib.util.find_spec("libtpu") is not None and _tpu_chips_present(sysfs)


def _on_kubernetes_job() -> bool:
    """A pod of an indexed Kubernetes Job or a JobSet: JAX's `k8s` cluster detection
    (the `jax[k8s]` extra) finds the coordinator and the pods through the Kubernetes API.

    An indexed Job gives each pod JOB_COMPLETION_INDEX; a JobSet also sets JOBSET_NAME. A
    plain pod (a Deployment, an interactive one) has neither and trains alone.
    """
    if "KUBERNETES_SERVICE_HOST" not in os.environ:
        return False
    return bool(os.environ.get("JOB_COMPLETION_INDEX") or os.environ.get("JOBSET_NAME"))


def scheduled_process_count() -> int | None:
    """How many processes the launcher started, from its environment (None: not known).

    TGIC_NUM_PROCESSES, then SLURM (SLURM_STEP_NUM_TASKS / SLURM_NTASKS), Open MPI
    (OMPI_COMM_WORLD_SIZE), then a TPU pod's TPU_WORKER_HOSTNAMES (one process per host).
    """
    for name in (
        "TGIC_NUM_PROCESSES",
        "SLURM_STEP_NUM_TASKS",
        "SLURM_NTASKS",
        "OMPI_COMM_WORLD_SIZE",
    ):
        if (n := _env_int(name)) is not None:
            return n
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "").strip()
    return len(hosts.split(",")) if hosts else None


def maybe_initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Calls `jax.distributed.initialize` whenever a cluster is detected; True if it did.

    Explicit arguments win, then TGIC_COORDINATOR / TGIC_NUM_PROCESSES / TGIC_PROCESS_ID,
    then JAX_COORDINATOR_ADDRESS (JAX reads it); for what is not given, JAX's own
    detection runs on a SLURM job step of several tasks (SLURM_JOB_ID, SLURM_NTASKS), an
    Open MPI job (OMPI_MCA_orte_hnp_uri, OMPI_COMM_WORLD_SIZE), a Cloud TPU VM
    (single-host ones included: the coordination service also carries JAX's preemption
    notice) and a pod of a Kubernetes indexed Job or JobSet (JAX's `k8s` detector, which
    needs the `jax[k8s]` extra). One plain host: nothing.
    Afterwards `jax.process_count()` must equal what the launcher says
    (`scheduled_process_count`, or `num_processes`), else a clear error: a task training
    alone on a shared workdir would overwrite the others' checkpoints.
    """
    coordinator_address = coordinator_address or os.environ.get("TGIC_COORDINATOR") or None
    if num_processes is None:
        num_processes = _env_int("TGIC_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("TGIC_PROCESS_ID")
    expected = num_processes if num_processes is not None else scheduled_process_count()
    explicit = coordinator_address is not None or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
    launcher = "SLURM_JOB_ID" in os.environ or "OMPI_MCA_orte_hnp_uri" in os.environ
    tpu_vm = _on_tpu_vm()  # on GKE too: JAX's TPU detection needs no Kubernetes API
    kubernetes = not explicit and not tpu_vm and _on_kubernetes_job()
    if kubernetes and importlib.util.find_spec("kubernetes") is None:
        raise RuntimeError(
            "a Kubernetes indexed Job / JobSet pod: JAX finds its peers through the "
            "`kubernetes` package: pip install 'jax[k8s]' (or pass --coordinator/"
            "--num_processes/--process_id)"
        )
    if not (
        (explicit and expected != 1)
        or tpu_vm
        or kubernetes
        or (launcher and expected is not None and expected > 1)
    ):
        if expected is not None:  # e.g. TGIC_NUM_PROCESSES=4 but no coordinator: say so
            check_process_count(expected)
        return False
    # CPU all-reduces across processes need a collectives implementation; it only affects
    # the CPU client. (Asking for the backend here would initialize it too early.)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    check_process_count(expected)
    return True


def check_process_count(expected: int | None = None) -> None:
    """Raises when JAX sees another number of processes than the launcher started."""
    expected = scheduled_process_count() if expected is None else expected
    if expected is not None and jax.process_count() != expected:
        raise RuntimeError(
            f"JAX sees {jax.process_count()} process(es) but the launcher started {expected}: "
            "pass --coordinator/--num_processes/--process_id (or TGIC_COORDINATOR/"
            "TGIC_NUM_PROCESSES/TGIC_PROCESS_ID) on every host"
        )


def any_host(flag: bool) -> bool:
    """True on every process when `flag` is True on any one (a tiny all-gather).

    Every process must call it at the same point of the loop (it is a collective).
    """
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils  # multi-host only

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def sync_hosts(name: str, timeout_s: float = 3600.0) -> None:
    """Blocks until every process has reached the barrier `name`; nothing on one process.

    A barrier of the coordination service (`jax.distributed`), not a collective: CPU (gloo)
    collectives give a communicator only 30 s to form (measured: the first all-reduce fails
    with DEADLINE_EXCEEDED when one host arrives 30 s after the other), so hosts that
    finish compiling minutes apart must meet here before their first collective step.
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost  # multi-host only

    multihost.get_barrier_sync_fn()(key=name, timeout_ms=int(timeout_s * 1000))


def agree_on_int(value: int) -> int:
    """Process 0's `value` on every host (a collective: every host must call it)."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def __getattr__(name: str):
    """`StopAgreement` and `BUDGET_CHECK_EVERY_STEPS`, moved to `lifecycle.stop` (which imports
    this module, hence looked up lazily)."""
    if name not in ("StopAgreement", "BUDGET_CHECK_EVERY_STEPS", "_StopSignals"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from tgic_jax.train.lifecycle import stop

    return getattr(stop, name)
