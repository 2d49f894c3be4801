"""The package's public import paths: the ones users and scripts rely on survive the layout."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_old_import_paths_are_the_moved_modules_themselves():
    import tgic_jax.codec
    import tgic_jax.convert
    import tgic_jax.losses
    from tgic_jax.coding import codec
    from tgic_jax.model import TACO, ModelConfig, convert, taco
    from tgic_jax.train import losses

    # The same module objects, so monkeypatching or isinstance checks behave alike.
    assert tgic_jax.codec is codec
    assert tgic_jax.convert is convert
    assert tgic_jax.losses is losses
    assert TACO is taco.TACO and ModelConfig is taco.ModelConfig
    assert tgic_jax.codec.Coder is codec.Coder


def test_python_dash_m_tgic_jax_cli_runs_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "tgic_jax.cli", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for command in ("compress", "decompress", "convert", "evaluate", "export", "env"):
        assert command in proc.stdout
