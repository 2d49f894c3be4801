"""What a backend or launcher gets: LPIPS precision, the train cache folder, cluster detection."""

import jax
import pytest

from tgic_jax.cli import environment
from tgic_jax.cli import main as cli_main
from tgic_jax.train import distributed, precision


def _taco_loss():
    from configs.taco import get_config

    return get_config("lmbda=0.0004").loss


def test_the_paper_configs_lpips_is_float64_on_cpu_and_gpu_and_float32_on_tpu():
    loss = _taco_loss()
    assert loss.lpips_float64 is True
    assert precision.lpips_float64(loss, "cpu") and precision.lpips_float64(loss, "cuda")
    assert precision.lpips_float64(loss, "gpu")
    assert not precision.lpips_float64(loss, "tpu")
    assert precision.lpips_precision(loss, "tpu") == (
        "float32 (loss.lpips_float64 asks float64, which tpu lacks)"
    )
    loss.lpips_float64 = False
    assert precision.lpips_precision(loss, "cpu") == "float32"
    loss.k_p = 0.0
    assert precision.lpips_precision(loss, "tpu") == "not used (loss.k_p = 0)"


def test_tgic_env_shows_the_lpips_precision_and_the_train_cache_folder(monkeypatch, tmp_path):
    from configs.taco import get_config

    monkeypatch.delenv("TGIC_JAX_CACHE", raising=False)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    info = environment.describe(get_config("lmbda=0.0004"))
    assert info["lpips_precision"] == "float64"  # this CPU
    assert info["train_compilation_cache_dir"] == str(tmp_path / "jax")
    text = environment.format_report(info)
    assert "LPIPS precision:   float64" in text
    assert f"train.py cache:    {tmp_path / 'jax'}" in text


def test_train_cache_folder_respects_jax_s_variable_and_turns_off(monkeypatch, tmp_path):
    monkeypatch.delenv("TGIC_JAX_CACHE", raising=False)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli_main.training_cache_dir() == str(tmp_path / "tgic_jax" / "jax_cache")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "gs://bucket/jax_cache")
    assert cli_main.training_cache_dir() == "gs://bucket/jax_cache"
    monkeypatch.setenv("TGIC_JAX_CACHE", "off")
    assert cli_main.training_cache_dir() is None


def test_enable_training_cache_sets_jax_s_folder_or_turns_the_cache_off(monkeypatch, tmp_path):
    updates = {}
    monkeypatch.setattr(jax.config, "update", lambda name, value: updates.update({name: value}))
    monkeypatch.delenv("TGIC_JAX_CACHE", raising=False)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "c"))
    assert cli_main.enable_training_cache() == str(tmp_path / "c")
    assert (tmp_path / "c").is_dir()
    assert updates == {"jax_compilation_cache_dir": str(tmp_path / "c")}
    updates.clear()
    assert cli_main.enable_training_cache(enabled=False) is None
    assert updates == {"jax_enable_compilation_cache": False}


# ----------------------------------------------------------------------------- launchers
@pytest.fixture
def recorder(monkeypatch):
    for name in (
        "TGIC_COORDINATOR",
        "TGIC_NUM_PROCESSES",
        "TGIC_PROCESS_ID",
        "JAX_COORDINATOR_ADDRESS",
        "SLURM_JOB_ID",
        "OMPI_MCA_orte_hnp_uri",
        "TPU_WORKER_HOSTNAMES",
        "MEGASCALE_COORDINATOR_ADDRESS",
        "KUBERNETES_SERVICE_HOST",
        "JOB_COMPLETION_INDEX",
        "JOBSET_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax.config, "update", lambda *args: None)
    monkeypatch.setattr(distributed, "_on_tpu_vm", lambda: False)
    return calls


def test_an_indexed_kubernetes_job_leaves_detection_to_jax(recorder, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert distributed.maybe_initialize_distributed() is False  # a plain pod trains alone
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    real = distributed.importlib.util.find_spec
    fake = lambda name, *a: object() if name == "kubernetes" else real(name, *a)
    monkeypatch.setattr(distributed.importlib.util, "find_spec", fake)
    assert distributed.maybe_initialize_distributed() is True
    # No argument filled in: JAX's own k8s cluster detection finds coordinator, count, id.
    assert recorder == [dict(coordinator_address=None, num_processes=None, process_id=None)]


def test_a_kubernetes_job_without_the_k8s_extra_says_what_to_install(recorder, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("JOBSET_NAME", "taco")
    real = distributed.importlib.util.find_spec
    fake = lambda name, *a: None if name == "kubernetes" else real(name, *a)
    monkeypatch.setattr(distributed.importlib.util, "find_spec", fake)
    with pytest.raises(RuntimeError, match=r"pip install 'jax\[k8s\]'"):
        distributed.maybe_initialize_distributed()
    assert recorder == []


def test_a_tpu_vm_is_told_by_its_pci_vendor_id_and_libtpu(tmp_path, monkeypatch):
    for name in ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "0000:00:04.0").mkdir()
    (tmp_path / "0000:00:04.0" / "vendor").write_text("0x1af4\n")  # virtio: not a TPU
    assert not distributed._tpu_chips_present(str(tmp_path))
    (tmp_path / "0000:00:05.0").mkdir()
    (tmp_path / "0000:00:05.0" / "vendor").write_text("0x1ae0\n")  # Google
    assert distributed._tpu_chips_present(str(tmp_path))
    real = distributed.importlib.util.find_spec
    for libtpu in (None, object()):
        fake = lambda name, *a, lib=libtpu: lib if name == "libtpu" else real(name, *a)
        monkeypatch.setattr(distributed.importlib.util, "find_spec", fake)
        assert distributed._on_tpu_vm(str(tmp_path)) is (libtpu is not None)
    assert not distributed._tpu_chips_present(str(tmp_path / "absent"))
