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


def maybe_initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Calls `jax.distributed.initialize` when several hosts are launched; True if it did.

    Explicit arguments win; otherwise the TGIC_COORDINATOR / TGIC_NUM_PROCESSES /
    TGIC_PROCESS_ID environment variables; otherwise JAX's own cluster detection (SLURM,
    TPU pods, ...) is tried only when JAX_COORDINATOR_ADDRESS is set. One host: nothing.
    """
    coordinator_address = coordinator_address or os.environ.get("TGIC_COORDINATOR")
    if num_processes is None and os.environ.get("TGIC_NUM_PROCESSES"):
        num_processes = int(os.environ["TGIC_NUM_PROCESSES"])
    if process_id is None and os.environ.get("TGIC_PROCESS_ID"):
        process_id = int(os.environ["TGIC_PROCESS_ID"])
    if coordinator_address is None and not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return False
    if num_processes == 1:
        return False
    # CPU all-reduces across processes need a collectives implementation; it only affects
    # the CPU client. (Asking for the backend here would initialize it too early.)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    return True


def sync_hosts(name: str, timeout_s: float = 3600.0) -> None:
    """Blocks until every process has reached the barrier `name`; nothing on one process.

    A barrier of the coordination service (`jax.distributed`), not a collective: CPU (gloo)
    collectives give a communicator only 30 s to form (measured: the first all-reduce fails
    with DEADLINE_EXCEEDED when one host arrives 30 s after the other), so hosts that
    finish compiling minutes apart must meet here before their first collective step.
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost  # noqa: PLC0415 - multi-host only

    multihost.get_barrier_sync_fn()(key=name, timeout_ms=int(timeout_s * 1000))


def agree_on_int(value: int) -> int:
    """Process 0's `value` on every host (a collective: every host must call it)."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils  # noqa: PLC0415

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
        return jax.make_mesh((n,), (DATA,))
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
