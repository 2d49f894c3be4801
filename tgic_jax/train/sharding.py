"""Device mesh and shardings: one `data` axis, batches split on it, the state replicated.

Everything that decides where an array lives is here, so that sharding the state over the
`data` axis (FSDP) later is a change of `state_sharding` driven by config.mesh, not of the
training code.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


def _on_tpu_vm() -> bool:
    """A Cloud TPU VM (GCE or GKE): its pod env variables, or JAX's own finding of TPU chips."""
    if os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return True
    from jax._src import cloud_tpu_init  # set when `import jax` found libtpu + chips

    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def scheduled_process_count() -> int | None:
    """How many processes the launcher started, from its environment (None: not known).

    TGIC_NUM_PROCESSES, then SLURM (SLURM_STEP_NUM_TASKS / SLURM_NTASKS), Open MPI
    (OMPI_COMM_WORLD_SIZE), then a TPU pod's TPU_WORKER_HOSTNAMES (one process per host).
    """
    for name in ("TGIC_NUM_PROCESSES", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS",
                 "OMPI_COMM_WORLD_SIZE"):  # fmt: skip
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
    Open MPI job (OMPI_MCA_orte_hnp_uri, OMPI_COMM_WORLD_SIZE) and a Cloud TPU VM
    (single-host ones included: the coordination service also carries JAX's preemption
    notice). One plain host: nothing.
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
    if not (
        (explicit and expected != 1)
        or _on_tpu_vm()
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


def make_mesh(mesh_config=None, devices=None) -> Mesh:
    """A 1-D mesh with axis `data`; mesh_config.data = number of devices (-1: all)."""
    devices = list(jax.devices() if devices is None else devices)
    n = -1 if mesh_config is None else int(mesh_config.get("data", -1))
    if n == -1:
        n = len(devices)
    if n > len(devices):
        raise ValueError(f"mesh.data={n} but only {len(devices)} devices are visible")
    if n == len(jax.devices()):
        # Auto axes: jax >= 0.8 makes them Explicit by default, under which the model's
        # reshapes of batch-sharded activations fail to trace (ShardingTypeError).
        return jax.make_mesh((n,), (DATA,), axis_types=(jax.sharding.AxisType.Auto,))
    # A sub-mesh (tests, debugging on fewer devices); single-process only.
    return Mesh(np.asarray(devices[:n]), (DATA,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over `data`, the rest replicated."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full array on every device."""
    return NamedSharding(mesh, P())


def state_sharding(mesh: Mesh, state_shapes, mesh_config=None):
    """Shardings for the train state (a pytree like `state_shapes`): replicated for now."""
    del mesh_config  # FSDP would read e.g. mesh_config.fsdp here.
    return jax.tree_util.tree_map(lambda _: replicated(mesh), state_shapes)


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
    """This process's share of a global batch (batch split evenly over processes)."""
    if global_batch % jax.process_count():
        raise ValueError(
            f"global batch {global_batch} not divisible by {jax.process_count()} hosts"
        )
    if global_batch % mesh.shape[DATA]:
        raise ValueError(
            f"global batch {global_batch} not divisible by mesh data={mesh.shape[DATA]}"
        )
    return global_batch // jax.process_count()


def make_global_batch(mesh: Mesh, host_batch: dict) -> dict:
    """Host-local numpy arrays -> global jax Arrays sharded on `data`."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in host_batch.items()
    }


def put_replicated(tree, mesh: Mesh):
    """Host values (identical on every process) -> replicated global jax Arrays."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree)
