"""gs:// without its package is one line naming the extra, before any work; local paths pass."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tgic_jax import storage

REPO = Path(__file__).resolve().parents[1]
# gcsfs made unimportable in the child (find_spec answers None), whatever is installed.
BLOCK = "import sys; sys.modules['gcsfs'] = None; "


def test_a_gs_url_without_gcsfs_names_the_extra_and_local_paths_pass(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    with pytest.raises(storage.MissingStorageBackend) as err:
        storage.check_urls(["x", {"input": {"data_dir": "gs://bucket/coco"}}])
    assert str(err.value) == (
        "gs://bucket/coco: gs:// paths need the gcsfs package: pip install 'tgic_jax[gcs]'"
    )
    storage.check_urls([tmp_path, str(tmp_path), f"file://{tmp_path}", 3, None, ["a", "b"]])


def _run(code):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_scripts_on_a_gs_workdir_without_gcsfs_say_one_line_and_write_nothing(script):
    proc = _run(
        f"import runpy; sys.argv = [{script!r}, '--config', 'configs/small.py:tiny', "
        f"'--workdir', 'gs://bucket/run']; runpy.run_path({script!r}, run_name='__main__')"
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip() == (
        f"{script}: error: gs://bucket/run: gs:// paths need the gcsfs package: "
        "pip install 'tgic_jax[gcs]'"
    )
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "--workdir", "gs://bucket/run", "--out", "OUT"],
        ["compress", "x.png", "--caption", "c", "--checkpoint", "gs://bucket/ckpt", "-o", "y"],
        ["evaluate", "--checkpoint", "gs://bucket/ckpt", "--out", "o"],
    ],
)
def test_tgic_commands_with_a_gs_path_without_gcsfs_say_one_line(argv, tmp_path):
    proc = _run(f"from tgic_jax.cli.main import main; sys.exit(main({argv!r}))")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"tgic {argv[0]}: error: gs://bucket/")
    assert proc.stderr.strip().endswith("pip install 'tgic_jax[gcs]'")
