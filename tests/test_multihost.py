"""Pods without a pod: cluster detection at start and workdirs that stay URLs."""

import os

import jax
import ml_collections
import pytest

from tgic_jax.checkpoints import inference
from tgic_jax.train import distributed, trainer

_LAUNCHER_VARS = (
    "TGIC_COORDINATOR",
    "TGIC_NUM_PROCESSES",
    "TGIC_PROCESS_ID",
    "JAX_COORDINATOR_ADDRESS",
    "SLURM_JOB_ID",
    "SLURM_NTASKS",
    "SLURM_STEP_NUM_TASKS",
    "OMPI_MCA_orte_hnp_uri",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
    "MEGASCALE_COORDINATOR_ADDRESS",
)


@pytest.fixture
def no_launcher(monkeypatch):
    """A plain host: none of the launchers' variables, and jax.distributed.initialize recorded."""
    for name in _LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax.config, "update", lambda *args: None)
    return calls


def test_one_plain_host_and_a_one_task_slurm_job_do_not_start_jax_distributed(
    no_launcher, monkeypatch
):
    assert distributed.maybe_initialize_distributed() is False
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert distributed.maybe_initialize_distributed() is False
    assert no_launcher == []


def test_a_slurm_job_of_two_tasks_starts_jax_distributed_and_checks_the_process_count(
    no_launcher, monkeypatch
):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    # JAX's SLURM detection fills in address, count and id; here (the recorder instead of
    # JAX) the process stays alone, which must fail loudly, not train alone.
    with pytest.raises(RuntimeError, match=r"JAX sees 1 process\(es\) but the launcher started 2"):
        distributed.maybe_initialize_distributed()
    assert no_launcher == [dict(coordinator_address=None, num_processes=None, process_id=None)]


def test_explicit_settings_are_passed_on_and_a_count_without_coordinator_is_refused(
    no_launcher, monkeypatch
):
    with pytest.raises(RuntimeError, match="launcher started 2"):
        distributed.maybe_initialize_distributed("host0:1234", 2, 1)
    assert no_launcher == [dict(coordinator_address="host0:1234", num_processes=2, process_id=1)]
    monkeypatch.setenv("TGIC_NUM_PROCESSES", "4")  # four hosts meant, none to meet at
    with pytest.raises(RuntimeError, match="--coordinator/--num_processes/--process_id"):
        distributed.maybe_initialize_distributed()
    assert len(no_launcher) == 1


def test_scheduled_process_count_reads_slurm_open_mpi_and_tpu_pods(no_launcher, monkeypatch):
    assert distributed.scheduled_process_count() is None
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t0,t1,t2,t3")
    assert distributed.scheduled_process_count() == 4
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "8")
    assert distributed.scheduled_process_count() == 8
    monkeypatch.setenv("SLURM_NTASKS", "16")
    assert distributed.scheduled_process_count() == 16


# ----------------------------------------------------------------------------- workdirs
def test_workdir_paths_keep_a_bucket_url_and_make_local_ones_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        str(inference.as_path("gs://bucket/run") / "checkpoints") == "gs://bucket/run/checkpoints"
    )
    assert str(inference.as_path(f"file://{tmp_path}/run")) == f"{tmp_path}/run"
    assert str(inference.as_path("run")) == os.path.join(str(tmp_path), "run")


def test_a_gs_workdir_config_is_written_to_the_bucket_not_to_a_local_gs_folder(
    tmp_path, monkeypatch
):
    registry = pytest.importorskip("fsspec.registry")
    from etils.epath import gpath
    from fsspec.implementations.memory import MemoryFileSystem

    class FakeBucket(MemoryFileSystem):  # gs:// without a network
        protocol = ("gs", "gcs")
        store, pseudo_dirs = {}, [""]

    for name in FakeBucket.protocol:
        monkeypatch.setitem(registry._registry, name, FakeBucket)
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # epath: fsspec for gs://
    monkeypatch.chdir(tmp_path)
    config = ml_collections.ConfigDict({"seed": 3, "optim": {"learning_rate": 1e-4}})
    trainer.write_workdir_config(config, "gs://bucket/run")
    assert list(FakeBucket.store) == ["gs://bucket/run/config.json"]
    assert trainer.load_workdir_config("gs://bucket/run").to_dict() == config.to_dict()
    assert not list(tmp_path.iterdir())  # the old Path(workdir).absolute() made ./gs:/bucket
