"""Training on a bare GPU image: no TensorFlow anywhere in the training path.

Every process here starts with a sitecustomize that makes `import tensorflow` (and
tensorflow_datasets) fail, as on a GPU image without them; `importlib.util.find_spec`
then says they are absent, as it would there.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, _run_train

_BLOCK = 'import sys\nsys.modules["tensorflow"] = None\nsys.modules["tensorflow_datasets"] = None\n'


def _no_tf_env(tmp_path):
    site = tmp_path / "no_tf_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_BLOCK)
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=f"{site}{os.pathsep}{REPO}",
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
    )


def test_the_blocking_sitecustomize_really_blocks_tensorflow(tmp_path):
    code = "import tensorflow"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=_no_tf_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr


@pytest.mark.slow
def test_tiny_training_resumes_exports_and_round_trips_an_image_without_tensorflow(
    tmp_path, kodak_dir
):
    # Two Kodak images and a file of random bytes named like a JPEG (a corrupt input).
    folder = tmp_path / "images"
    folder.mkdir()
    captions = json.loads((kodak_dir / "captions.json").read_text())
    kept = {}
    for name in sorted(captions)[:2]:
        shutil.copy(kodak_dir / name, folder / name)
        kept[name] = captions[name]
    (folder / "zz_bad.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "captions.json").write_text(json.dumps({**kept, "zz_bad.jpg": "noise"}))
    workdir = tmp_path / "run"
    env = _no_tf_env(tmp_path)

    def train(steps):
        proc = _run_train(
            workdir,
            f"--config.input.folder={folder}",
            f"--config.input.captions={folder}/captions.json",
            f"--config.total_steps={steps}",
            "--config.ckpt.every_steps=2",
            "--config.log_every_steps=1",
            env=env,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc.stdout

    out = train(3)
    assert "1 of 3 images unreadable, skipped: zz_bad.jpg" in out
    assert re.findall(r"\[train\] step (\d+)", out)[-1] == "3"
    out = train(5)
    assert "resumed from step 3" in out
    assert re.findall(r"\[train\] step (\d+)", out)[-1] == "5"
    events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 2  # one per run, written without TensorFlow

    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    acc = pea.EventAccumulator(str(workdir / "tensorboard"), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    assert [e.step for e in acc.Tensors("train/loss")] == [1, 2, 3, 4, 5]

    # The trained run becomes files on disk and back, still without TensorFlow: export, then
    # compress and decompress one image, each command its own process.
    from PIL import Image

    def tgic(*argv):
        proc = subprocess.run(
            [sys.executable, "-m", "tgic_jax.cli", *map(str, argv)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-4000:]
        return proc.stdout

    exported = tmp_path / "exported"
    assert tgic("export", "--workdir", workdir, "--out", exported).startswith("wrote ")
    assert json.loads((exported / "config.json").read_text())["train_step"] == 5
    image = np.asarray(Image.open(folder / sorted(kept)[0]).convert("RGB"))[:64, :96]
    Image.fromarray(image).save(tmp_path / "a.png")
    out = tgic(
        "compress",
        tmp_path / "a.png",
        "--caption",
        kept[sorted(kept)[0]],
        "--checkpoint",
        exported,
        "-o",
        tmp_path / "a.tgic",
    )
    size = (tmp_path / "a.tgic").stat().st_size
    assert f"{size} bytes" in out
    tgic("decompress", tmp_path / "a.tgic", "--checkpoint", exported, "-o", tmp_path / "b.png")
    decoded = np.asarray(Image.open(tmp_path / "b.png"))
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
