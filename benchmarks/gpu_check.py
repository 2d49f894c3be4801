r"""The prepared GPU check: everything a first run on a bare GPU image should print.

    bash benchmarks/gpu_check.sh [--cpu] [--authors-repo DIR]     (the one command)
    python benchmarks/gpu_check.py --build-wheels DIR             (here: the carried folder)

Sections, each in its own process with its own time limit, so one failure is reported in
one line and the others still run (9 minutes in all on a GPU):
  (a) `tgic env` for configs/taco.py;
  (b) the paper-size train step (N=192, M=320, 256 x 256 crops, every loss term: rate,
      MSE, LPIPS-Alex, CLIP joint with a tiny random CLIP unless real weights load) at
      batch 8, 16 and 32 per device, float32 and bfloat16: images/s, MFU, peak device
      memory (XLA's analysis of the step; the process's measured peak where the backend
      reports one) and compile time. The six steps compile at once in threads (XLA
      compiles in parallel; minutes otherwise), then run one after the other;
  (c) the authors' PyTorch step at batch 8 (benchmarks/authors_train_step.py), when
      their checkout is given; a line says so otherwise;
  (d) encode and decode milliseconds of kodim01 (768 x 512), paper-size model
      (benchmarks/codec.py);
  (e) images/s of the training input alone (benchmarks/input.py);
  (f) files encoded on the GPU with its default precision decode on the CPU to the same
      y_hat, bit for bit (the integer entropy path; benchmarks/cross_device.py).
`--cpu` runs the same code on the CPU: the tiny model of configs/small.py at 64 x 64,
batch 1, one timed step, one codec run, the cross-device check (~130 s on 2 quiet cores;
mostly compiling).

The carried folder holds the wheels a bare image lacks (`WHEELS`): `--build-wheels`
downloads them here (CPython 3.12, manylinux x86_64), under 60 MiB together (the LPIPS
weights ship inside this package). `--install-wheels` unpacks each one whose module the
image does not already have.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 560  # the whole check, one call on the device machine
CPU_BUDGET_S = 400  # the --cpu dry run (CI); it takes ~130 s on 2 quiet cores
MAX_WHEELS_MIB = 60

# (requirement, module): what a bare GPU image (jax + CUDA plugin, flax, optax, orbax,
# numpy, transformers, torch: so tokenizers and huggingface_hub too) lacks for training and
# this check. Pillow and tensorboard are usually there; they are unpacked only where missing.
WHEELS = (
    ("constriction==0.5.0", "constriction"),  # the range coder
    ("ml-collections==1.1.0", "ml_collections"),  # configs
    ("pillow==13.0.0", "PIL"),  # image decoding (input, codec)
    ("tensorboard==2.21.0", "tensorboard"),  # event-file protos (summary_writer)
)


# ----------------------------------------------------------------------------- wheels
def build_wheels(out: Path) -> int:
    """Downloads `WHEELS` into `out` for a CPython 3.12 Linux x86_64 image; lists sizes."""
    out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    for req, _ in WHEELS:
        cmd = pip + [
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--platform",
            "manylinux2014_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "any",
            "-d",
            str(out),
            req,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)}:\n{proc.stderr[-2000:]}")
    total = 0
    for whl in sorted(out.glob("*.whl")):
        size = whl.stat().st_size
        total += size
        print(f"{whl.name:<90} {size / 2**20:6.2f} MiB")
    print(f"{'total':<90} {total / 2**20:6.2f} MiB (limit {MAX_WHEELS_MIB})")
    return 0 if total <= MAX_WHEELS_MIB * 2**20 else 1


def install_wheels(wheels: Path, target: Path) -> int:
    """Unpacks each carried wheel whose module is missing into `target` (put on PYTHONPATH)."""
    target.mkdir(parents=True, exist_ok=True)
    for req, module in WHEELS:
        dist = req.split("==")[0].replace("-", "_").lower()
        found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(dist + "-")]
        if importlib.util.find_spec(module) is not None:
            print(f"wheels: {module} already installed")
        elif not found:
            print(f"wheels: {module} missing and not carried ({wheels})")
        else:
            with zipfile.ZipFile(found[0]) as z:
                z.extractall(target)  # a wheel is a zip of its site-packages files
            print(f"wheels: {found[0].name} unpacked")
    return 0


# ----------------------------------------------------------------------------- (b) step
def _case_config(cpu: bool, compute_dtype: str):
    if cpu:
        from configs.small import get_config

        config = get_config("tiny")
        config.loss.k_p = 1.0  # every term on, as on the GPU
        config.loss.k_j = 0.5
        crop = 64
    else:
        from configs.taco import get_config

        config = get_config("lmbda=0.0004")
        crop = 256
    config.model.compute_dtype = compute_dtype
    return config, crop


def train_step_cases(cpu: bool, batches: list[int], dtypes: list[str], steps: int) -> int:
    """Compiles every (dtype, batch) step at once in threads, then times each; JSON lines.

    Returns the number of cases that failed.
    """
    import jax
    import jax.numpy as jnp
    import ml_collections
    import numpy as np

    sys.path.insert(0, str(REPO))
    from tgic_jax.model.taco import TACO, ModelConfig
    from tgic_jax.train import losses, optim, sharding, throughput, train_state, train_step

    try:  # the benchmarks' tiny CLIP (real ViT-B/32 weights are not carried)
        from benchmarks.train import _tiny_clip

        clip_model, clip_note = _tiny_clip(), "tiny random CLIP"
    except Exception as err:  # noqa: BLE001 - no Flax CLIP here: run without the joint term
        clip_model, clip_note = None, f"no CLIP ({type(err).__name__}: {err}); k_j=0"
    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1)))
    rng = np.random.default_rng(0)
    begun = time.perf_counter()
    cases = {}

    def compile_case(key):  # from the state's shapes: the state is made meanwhile
        c = cases[key]
        t0 = time.perf_counter()
        c["compiled"] = c["step"].lower(c["abstract"], c["frozen"], c["data"], c["lr"]).compile()
        c["compile_s"] = time.perf_counter() - t0

    # Every case compiles in its own thread from the moment it is set up, and the state is
    # initialized (one more compile) beside them: on a 2-core CPU the dry run's wall time is
    # about half the compiles' sum.
    pool = concurrent.futures.ThreadPoolExecutor(len(dtypes) * len(batches))
    futures = {}
    for dtype in dtypes:
        for batch in batches:
            config, crop = _case_config(cpu, dtype)
            if clip_model is None:
                config.loss.k_j = 0.0
            config.loss.joint_group_size = min(int(config.loss.joint_group_size), batch)
            model = TACO(ModelConfig.from_config(config.model))
            loss_fn, frozen = losses.build_loss(config.loss, clip_model=clip_model)
            optimizer = optim.make_optimizer(config.optim)
            if not cases:  # the same state tree for every case (parameters stay float32)
                shardings, abstract = train_state.abstract_train_state(model, optimizer, 0, mesh)
            step = train_step.jit_train_step(
                train_step.make_train_step(model, loss_fn, optimizer), mesh, shardings
            )
            td = int(config.model.text_dim)
            host = {
                "image": rng.random((batch, crop, crop, 3), np.float32),
                "text": rng.standard_normal((batch, 38, td), np.float32),
            }
            if config.loss.k_j > 0:
                emb = rng.standard_normal((batch, 512)).astype(np.float32)
                host["clip_text"] = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
            print(f"set up {dtype} batch {batch} ({time.perf_counter() - begun:.0f} s)", flush=True)
            cases[(dtype, batch)] = dict(
                abstract=abstract,
                frozen=sharding.put_replicated(frozen, mesh),
                step=step,
                data=sharding.make_global_batch(mesh, host),
                lr=np.float32(config.optim.learning_rate),
                crop=crop,
                terms="rate+MSE+LPIPS" + ("+CLIP" if config.loss.k_j > 0 else ""),
            )
            futures[(dtype, batch)] = pool.submit(_catching(compile_case), (dtype, batch))
    first_state = train_state.init_sharded_state(model, optimizer, 0, mesh)[0]
    errors = {key: f.result() for key, f in futures.items()}
    pool.shutdown()
    print(
        f"compiled {len(cases)} steps and the state in {time.perf_counter() - begun:.0f} s "
        "(in parallel)",
        flush=True,
    )
    for c in cases.values():
        c["state"] = jax.tree_util.tree_map(jnp.copy, first_state)  # each case donates its own
    device = jax.devices()[0]
    peak = throughput.peak_flops(device.device_kind)
    for (dtype, batch), c in cases.items():
        if errors[(dtype, batch)]:
            print(f"train step {dtype} batch {batch}: FAILED {errors[(dtype, batch)]}")
            continue
        state, compiled = c["state"], c["compiled"]
        state, metrics = compiled(state, c["frozen"], c["data"], c["lr"])  # warm-up
        jax.block_until_ready(metrics)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            state, metrics = compiled(state, c["frozen"], c["data"], c["lr"])
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t)
        c["state"] = None  # frees the case's device memory before the next
        median = float(np.median(times))
        flops = throughput.compiled_flops(compiled)
        memory = throughput.compiled_memory(compiled)
        stats = device.memory_stats() or {}
        r = {
            "dtype": dtype,
            "batch": batch,
            "crop": c["crop"],
            "terms": c["terms"],
            "clip": clip_note,
            "images_per_second": round(batch / median, 2),
            "step_ms": round(1e3 * median, 1),
            "mfu": None if not (flops and peak) else round(flops / median / peak, 4),
            "xla_memory_gib": None if memory is None else round(memory["total"] / 2**30, 2),
            "process_peak_gib": (
                round(stats["peak_bytes_in_use"] / 2**30, 2)
                if "peak_bytes_in_use" in stats
                else None
            ),
            "compile_s": round(c["compile_s"], 1),
            "loss": float(metrics["loss"]),
            "device": f"{device.device_kind} ({jax.default_backend()})",
        }
        print(
            f"train step {dtype} batch {batch}: {r['images_per_second']} images/s, "
            f"{r['step_ms']} ms/step, MFU {r['mfu']}, XLA memory {r['xla_memory_gib']} GiB, "
            f"process peak {r['process_peak_gib']} GiB, compile {r['compile_s']} s "
            f"[{r['terms']}; {clip_note}]",
            flush=True,
        )
        print("RESULT " + json.dumps(r), flush=True)
    return sum(1 for e in errors.values() if e)


def _catching(fn):
    def run(*args):
        try:
            fn(*args)
            return None
        except Exception as err:  # noqa: BLE001 - one case's failure is its own line
            return f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"

    return run


# ----------------------------------------------------------------------------- driver
def _section(title: str, cmd: list[str], limit_s: float, env: dict) -> bool:
    """Runs one section in its own process; its output streams through; one line on failure."""
    print(f"\n== {title}", flush=True)
    if limit_s < 10:
        print("skipped: the check's time is spent", flush=True)
        return False
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, timeout=limit_s, cwd=REPO)
    except subprocess.TimeoutExpired:
        print(f"{title}: stopped after {limit_s:.0f} s (its limit)", flush=True)
        return False
    ok = proc.returncode == 0
    print(
        f"-- {title}: {'ok' if ok else f'FAILED (exit {proc.returncode})'} in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return ok


def run_check(cpu: bool, authors_repo: str | None) -> int:
    """All sections in order within `BUDGET_S`; 0 when every section that ran passed."""
    begun = time.perf_counter()
    # The CPU dry run is mostly compiling (two steps with every loss term and the state,
    # at once) and the cross-device check: ~130 s on 2 quiet cores, room for a loaded CI.
    budget = CPU_BUDGET_S if cpu else BUDGET_S

    def left(share: float) -> float:  # a section's limit: its share, never past the budget
        return min(share, budget - (time.perf_counter() - begun) - 5)

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if cpu:
        env["JAX_PLATFORMS"] = "cpu"
    else:  # the measured peak is the step's, not a preallocated 75 % of the card
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    py = sys.executable
    me = str(Path(__file__).resolve())
    results = []
    config = "configs/small.py:tiny" if cpu else "configs/taco.py:lmbda=0.0004"
    results.append(
        _section(
            "(a) tgic env", [py, "-m", "tgic_jax.cli", "env", "--config", config], left(60), env
        )
    )
    batches, steps = ("1", 1) if cpu else ("8,16,32", 5)
    results.append(
        _section(
            "(b) train step, every loss term, float32 and bfloat16",
            [py, me, "--train-cases", "--batches", batches, "--steps", str(steps)]
            + (["--cpu"] if cpu else []),
            left(600 if cpu else 300),
            env,
        )
    )
    print("\n== (c) the authors' PyTorch step, batch 8", flush=True)
    if authors_repo and Path(authors_repo).is_dir():
        cmd = [
            py,
            str(REPO / "benchmarks" / "authors_train_step.py"),
            "--repo",
            authors_repo,
            "--batch",
            "8",
            "--steps",
            "1" if cpu else "10",
        ]
        cmd += ["--cpu"] if cpu else []
        results.append(_section("(c) authors' step", cmd, left(60), env))
    else:
        print("skipped: no checkout of the authors' code carried (--authors-repo DIR)")
    codec = [py, "benchmarks/codec.py", "--runs", "1" if cpu else "3"]
    results.append(
        _section(
            "(d) encode / decode of kodim01, paper-size model",
            codec + (["--small"] if cpu else []),
            left(90),
            env,
        )
    )
    inp = [py, "benchmarks/input.py", "--batches", "2" if cpu else "30"]
    results.append(
        _section("(e) input alone", inp + (["--batch", "4"] if cpu else []), left(60), env)
    )
    cross = [py, "benchmarks/cross_device.py"]  # the small model: its CPU decode is quick
    results.append(_section("(f) encode here, decode on the CPU", cross, left(120), env))
    print(
        f"\ngpu check: {sum(results)} of {len(results)} sections ok in "
        f"{time.perf_counter() - begun:.0f} s",
        flush=True,
    )
    return 0 if all(results) else 1


def main(argv=None) -> int:
    """The check (default), or one of its parts."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="the dry run: small sizes on the CPU")
    p.add_argument("--authors-repo", default=os.environ.get("AUTHORS_REPO"))
    p.add_argument("--build-wheels", metavar="DIR", help="download the carried wheels here")
    p.add_argument("--install-wheels", metavar="DIR", help="unpack missing carried wheels")
    p.add_argument("--target", default=str(REPO / ".gpu_check" / "site"))
    p.add_argument("--train-cases", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batches", default="8,16,32")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args(argv)
    if a.build_wheels:
        return build_wheels(Path(a.build_wheels))
    if a.install_wheels:
        return install_wheels(Path(a.install_wheels), Path(a.target))
    if a.train_cases:
        batches = [int(b) for b in a.batches.split(",")]
        return min(1, train_step_cases(a.cpu, batches, a.dtypes.split(","), a.steps))
    return run_check(a.cpu, a.authors_repo)


if __name__ == "__main__":
    sys.exit(main())
