"""Device mesh and shardings: one `data` axis, batches split on it, the state replicated.

Everything that decides where an array lives is here, so that sharding the state over the
`data` axis (FSDP) later is a change of `state_sharding` driven by config.mesh, not of the
training code.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tgic_jax.config import MeshConfig

DATA = "data"


def make_mesh(mesh_config=None, devices=None) -> Mesh:
    """A 1-D mesh with axis `data`; mesh_config.data = number of devices (None: all)."""
    devices = list(jax.devices() if devices is None else devices)
    n = MeshConfig.from_config(mesh_config).data
    if n is None:
        n = len(devices)
    if n < 1:
        raise ValueError(
            f"mesh.data={n}: must be a number of devices (1-{len(devices)}) or None (all)"
        )
    if n > len(devices):
        raise ValueError(
            f"mesh.data={n} but only {len(devices)} devices are visible "
            "(mesh.data unset: all of them)"
        )
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
