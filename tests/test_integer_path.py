"""The integer entropy path: no overflow by construction, no float op, the same y_hat anywhere."""

from __future__ import annotations

import json
import os
import textwrap
from functools import partial

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY, _python, synthetic_image, text_states, tiny_model

from tgic_jax import image_io
from tgic_jax.coding import codec, container, integer_path, programs

A = integer_path.ACTIVATION_LIMIT


def _calibration_images():
    return [synthetic_image(128, 128, s) for s in range(2)]


@pytest.fixture(scope="module")
def tiny_int():
    """(model, float variables, the same variables with the integer entropy path)."""
    from tgic_jax.checkpoints.inference import integer_entropy_of

    model, v = tiny_model(0)
    ip = integer_entropy_of(model, v["params"], v["tables"], _calibration_images())
    return model, v, {**v, "integer_entropy": ip}


# ------------------------------------------------------------------------- overflow bound


def _layers(ip):
    for net, layers in ip.items():
        if net == "io":
            continue
        yield from ([(net, layers)] if "kernel" in layers else layers.items())


def test_every_layer_accumulator_and_requantization_bound_holds(tiny_int):
    ip = tiny_int[2]["integer_entropy"]
    bounds = integer_path.check_bounds(ip)
    assert len(bounds) == 3 + 3 * 4 + 5 * (1 + 3 + 3)  # h_s, channel, local, parameters
    for _, q in _layers(ip):
        # sum|w| x max|128 hi + lo| + |b|: the largest |acc| any clamped input can give.
        w = np.abs(q["kernel"].astype(np.int64)).sum(axis=(0, 1, 2))
        acc = w * (64 * 128 + 127) + np.abs(q["bias"].astype(np.int64))
        assert acc.max() < 2**30
        assert q["kernel"].dtype == np.int8 and np.abs(q["kernel"]).max() <= 127
        m = q["multiplier"].astype(np.int64)
        assert (((q["limit"].astype(np.int64) >> 15) + 1) * m + m < 2**31).all()


def _reference_layer(q, x, geometry):
    """The layer in Python integers (int64, no wrap-around), for comparison."""
    lo_pad, hi_pad, s = geometry
    k = q["kernel"].astype(np.int64)
    xp = np.pad(x.astype(np.int64), ((0, 0), (lo_pad, hi_pad), (lo_pad, hi_pad), (0, 0)))
    kh = k.shape[0]
    h, w = xp.shape[1] - kh + 1, xp.shape[2] - kh + 1
    acc = np.zeros((x.shape[0], h, w, k.shape[-1]), np.int64)
    for i in range(kh):
        for j in range(kh):
            acc += np.einsum("bhwc,cd->bhwd", xp[:, i : i + h, j : j + w], k[i, j])
    acc += q["bias"]
    assert np.abs(acc).max() < 2**31  # the bound: never wraps
    a = np.clip(acc, -q["limit"].astype(np.int64), q["limit"])
    sh = q["shift"].astype(np.int64)
    out = (a * q["multiplier"] + (1 << (sh - 1))) >> sh  # floor(v + 1/2), exact
    out = np.clip(out << q["up"].astype(np.int64), q["low"], q["high"])
    return np.asarray(integer_path._shuffle(jnp.asarray(out), s))


@pytest.mark.parametrize("net", ["h_s", "channel_context_4", "entropy_parameters_nonanchor_4"])
def test_largest_inputs_give_the_exact_integer_result(tiny_int, net):
    ip = tiny_int[2]["integer_entropy"]
    specs = integer_path.layer_specs(TINY)[net]
    rng = np.random.default_rng(0)
    for layer, kind, k, stride, _ in specs:
        q = ip[net] if layer is None else ip[net][layer]
        geometry = integer_path._geometry(kind, k, stride)
        cin = q["kernel"].shape[2]
        # Every input at +-8191, with the signs that push output channel 0 to its extreme
        # at the centre, and random extremes elsewhere.
        x = A * rng.choice([-1, 1], size=(1, 7, 7, cin))
        kk = q["kernel"].shape[0]
        centre = 3 - geometry[0]
        signs = np.sign(q["kernel"][..., 0]).astype(np.int64)
        signs[signs == 0] = 1
        x[0, centre : centre + kk, centre : centre + kk] = A * signs
        for inputs in (x, -x):
            ours = integer_path.apply_layer(
                jax.tree_util.tree_map(jnp.asarray, q), jnp.asarray(inputs, jnp.int32), geometry
            )
            np.testing.assert_array_equal(np.asarray(ours), _reference_layer(q, inputs, geometry))


def test_an_output_finer_than_the_accumulator_is_rounded_then_shifted_up_exactly():
    # A trained layer of large weights and inputs: one accumulator step is ~2^5 output units.
    rng = np.random.default_rng(1)
    kernel = rng.normal(0, 1.0, (1, 1, 40, 6))
    q = integer_path._quantize_layer(
        kernel,
        rng.normal(0, 1, 6),
        np.full(40, 0.01),
        np.full(6, 2.0**-12),
        -(2**23 - 1),
        2**23 - 1,
    )
    assert (q["up"] > 0).all()
    x = rng.integers(-A, A + 1, (1, 3, 3, 40))
    ours = integer_path.apply_layer(
        jax.tree_util.tree_map(jnp.asarray, q), jnp.asarray(x, jnp.int32), (0, 0, 1)
    )
    np.testing.assert_array_equal(np.asarray(ours), _reference_layer(q, x, (0, 0, 1)))
    # And close to the float layer (int8 weights: ~1 % of the output's range).
    bias = q["bias"] * np.abs(kernel * 0.01).max(axis=(0, 1, 2)) / 127
    real = np.einsum("bhwc,cd->bhwd", x * 0.01, kernel[0, 0]) + bias
    assert np.abs(real).max() < 2**11  # within the output's range: no clamping
    assert np.abs(np.asarray(ours) * 2.0**-12 - real).max() < 0.03 * np.abs(real).max()


def test_a_layer_whose_weights_would_overflow_is_narrowed_until_the_bound_holds():
    # 5 x 5 x 224 inputs, every weight at the largest magnitude: 127 x 5600 x 8319 > 2^32.
    kernel = np.ones((5, 5, 224, 3))
    q = integer_path._quantize_layer(kernel, np.zeros(3), np.full(224, 1e-3), np.full(3, 0.1), 0, A)
    assert integer_path._accumulator_bound(q["kernel"], q["bias"]).max() < 2**30
    assert 0 < np.abs(q["kernel"]).max() < 127


# ------------------------------------------------------------------------- no float, anywhere


def _integer_program_args(tiny_int, i=2, h=4, w=6):
    model, _, v = tiny_int
    ip = v["integer_entropy"]
    fns = programs._network_functions(model)
    z_sym = jnp.zeros((1, h // 4, w // 4 + 1, TINY.N), jnp.int32)
    hyper = jnp.zeros((1, h, w, 2 * TINY.M), jnp.int32)
    prev = tuple(jnp.zeros((1, h, w, c), jnp.int32) for c in TINY.slices[:i])
    c = TINY.slices[i]
    ctx = jnp.zeros((1, h, w, 2 * c), jnp.int32)
    sym = jnp.zeros((1, h, w, c), jnp.int32)

    def scoped(name):
        return {k: ip[k] for k in programs.integer_scopes(name, i)}

    return {
        "hyper_int": (fns["hyper_int"], (scoped("hyper_int"), z_sym)),
        "anchor_int": (partial(fns["anchor_int"], i), (scoped("anchor_int"), hyper, prev)),
        "nonanchor_int": (
            partial(fns["nonanchor_int"], i),
            (scoped("nonanchor_int"), hyper, ctx, sym, sym),
        ),
        "combine_int": (
            partial(fns["combine_int"], i),
            (scoped("combine_int"), sym, sym, sym, sym),
        ),
    }


def _dtypes(jaxpr) -> set:
    out = set()
    for eqn in jaxpr.eqns:
        for v in (*eqn.invars, *eqn.outvars):
            if hasattr(v, "aval"):
                out.add(np.dtype(v.aval.dtype))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            out |= _dtypes(sub)
    return out


def test_the_integer_programs_compute_no_floating_point_value(tiny_int):
    for name, (fn, args) in _integer_program_args(tiny_int).items():
        dtypes = _dtypes(jax.make_jaxpr(fn)(*args).jaxpr)
        floats = {d for d in dtypes if not (np.issubdtype(d, np.integer) or d == np.bool_)}
        assert not floats, f"{name} computes {floats}"
        assert np.dtype(np.int8) in dtypes or name == "combine_int"  # the int8 convolutions


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_the_integer_programs_lower_for_gpu_and_tpu(tiny_int, platform):
    for name, (fn, args) in _integer_program_args(tiny_int).items():
        exported = jax.export.export(jax.jit(fn), platforms=[platform])(*args)
        text = exported.mlir_module()
        assert exported.platforms == (platform,)
        assert "f32" not in text and "f16" not in text, name
        if name != "combine_int":
            assert "xi8>" in text and "convolution" in text, name


# ------------------------------------------------------------------------- the codec


def test_an_integer_checkpoint_writes_version_5_files_that_decode_bitwise(tiny_int):
    model, v, vi = tiny_int
    image, text = synthetic_image(97, 131, 4), text_states(4)
    integer_coder, float_coder = codec.Coder(model, vi), codec.Coder(model, v)
    r = integer_coder.encode([image], [text], with_reconstruction=True)[0]
    assert r.data[4] == container.INTEGER_VERSION == 5
    assert integer_coder.fingerprint != float_coder.fingerprint
    np.testing.assert_array_equal(integer_coder.decode(r.data)[0], r.x_hat)
    # Within a few percent of the float path's bytes (random weights; Kodak: BENCHMARKS.md).
    f = float_coder.encode([image], [text])[0]
    assert abs(len(r.data) / len(f.data) - 1) < 0.05
    # The float-only checkpoint refuses the file in one line that says what decodes it.
    with pytest.raises(codec.BitstreamError, match="version 5 .* decode it with the checkpoint"):
        float_coder.decode(r.data)
    # The integer checkpoint still reads the float path's (version 4) files of its params.
    np.testing.assert_array_equal(integer_coder.decode(f.data)[0], float_coder.decode(f.data)[0])


def test_a_version_4_file_of_other_parameters_is_refused_by_an_integer_checkpoint(tiny_int):
    model, _, vi = tiny_int
    other_model, other = tiny_model(1)
    data = codec.Coder(other_model, other).encode([synthetic_image(1, 1)], [text_states()])[0].data
    with pytest.raises(codec.BitstreamError, match="version 4 .* decode it with the checkpoint"):
        codec.Coder(model, vi).decode(data)


def _perturbing(fn, eps: float):
    """fn with every floating-point value it computes moved by eps relative, random signs."""
    counter = iter(range(1 << 30))

    def run(jaxpr, consts, *args):
        env = {}

        def read(v):
            return v.val if isinstance(v, jax.extend.core.Literal) else env[v]

        for var, val in zip(jaxpr.constvars, consts, strict=True):
            env[var] = val
        for var, val in zip(jaxpr.invars, args, strict=True):
            env[var] = val
        for eqn in jaxpr.eqns:
            inputs = [read(v) for v in eqn.invars]
            sub = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr")
            if sub is not None and hasattr(sub, "jaxpr"):
                outs = run(sub.jaxpr, sub.consts, *inputs)
            else:
                outs = eqn.primitive.bind(*inputs, **eqn.params)
                outs = outs if eqn.primitive.multiple_results else [outs]
            moved = []
            for out in outs:
                if jnp.issubdtype(out.dtype, jnp.floating):
                    rng = np.random.default_rng(next(counter))
                    sign = rng.choice([-1.0, 1.0], size=out.shape).astype(np.float32)
                    out = out * (1 + eps * sign).astype(out.dtype)
                moved.append(out)
            for var, val in zip(eqn.outvars, moved, strict=True):
                env[var] = val
        return [read(v) for v in jaxpr.outvars]

    def perturbed(*args):
        closed = jax.make_jaxpr(fn)(*args)
        flat = jax.tree_util.tree_leaves(args)
        out_tree = jax.tree_util.tree_structure(jax.eval_shape(fn, *args))
        return jax.tree_util.tree_unflatten(out_tree, run(closed.jaxpr, closed.consts, *flat))

    return jax.jit(perturbed)


class _PerturbedPrograms:
    """The decoder's entropy-path programs with every float they compute moved by eps."""

    ENTROPY_PATH = ("hyper", "anchor", "nonanchor", "combine", *programs.INTEGER_PROGRAMS)

    def __init__(self, model, real, eps):
        self.real, self.eps = real, eps
        self.functions = programs._network_functions(model)
        self.cache = {}

    def __call__(self, name, *args, i=None):
        if name not in self.ENTROPY_PATH:
            return self.real(name, *args, i=i)
        key = (name, i)
        if key not in self.cache:
            fn = self.functions[name] if i is None else partial(self.functions[name], i)
            self.cache[key] = _perturbing(fn, self.eps)
        return self.cache[key](*args)


def _y_hat_or_error(coder, data):
    try:
        return coder.decode_y_hat(data)
    except codec.BitstreamError as e:
        return str(e)


@pytest.fixture(scope="module")
def trained(parity_dir):
    """The parity fixture's trained small model, float and with its integer entropy path."""
    from tgic_jax.checkpoints.authors import from_official_state_dict, load_state_dict_file
    from tgic_jax.checkpoints.inference import integer_entropy_of
    from tgic_jax.coding.tables import build_tables

    model, v = from_official_state_dict(
        load_state_dict_file(parity_dir / "official_state_dict.npz")
    )

    v["tables"] = build_tables(v["params"])
    return model, v, {**v, "integer_entropy": integer_entropy_of(model, v["params"], v["tables"])}


@pytest.mark.slow
def test_all_24_kodak_files_decode_to_the_same_y_hat_with_every_float_moved_by_1e_4(
    trained, kodak_dir
):
    model, v, vi = trained
    captions = json.loads((kodak_dir / "captions.json").read_text())
    names = sorted(captions)
    assert len(names) == 24
    rng = np.random.default_rng(0)
    images = [image_io.load_image(kodak_dir / n)[0] for n in names]
    texts = [rng.normal(size=(38, model.config.text_dim)).astype(np.float32) for _ in names]
    integer_coder = codec.Coder(model, vi)
    files = [r.data for r in integer_coder.encode(images, texts)]
    perturbed = codec.Coder(model, vi)
    perturbed.programs = _PerturbedPrograms(model, perturbed.programs, 1e-4)
    for name, data in zip(names, files, strict=True):
        plain = integer_coder.decode_y_hat(data)
        np.testing.assert_array_equal(perturbed.decode_y_hat(data), plain, err_msg=name)
    # The float path under the same perturbation: its files no longer decode to the same
    # y_hat (a scale moves across a table threshold and the stream derails, or a mean moves).
    float_coder = codec.Coder(model, v)
    float_perturbed = codec.Coder(model, v)
    float_perturbed.programs = _PerturbedPrograms(model, float_perturbed.programs, 1e-4)
    changed = 0
    for image, text in zip(images[:4], texts[:4], strict=True):
        data = float_coder.encode([image], [text])[0].data
        plain, moved = float_coder.decode_y_hat(data), _y_hat_or_error(float_perturbed, data)
        changed += isinstance(moved, str) or not np.array_equal(moved, plain)
    assert changed == 4


# ------------------------------------------------------------------------- another process

_DECODE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import jax
    jax.config.update("jax_platforms", "cpu")
    import numpy as np
    from tgic_jax.checkpoints.inference import load_inference
    from tgic_jax.coding import codec
    model, variables, _ = load_inference(sys.argv[1])
    coder = codec.Coder(model, variables)
    out = {}
    for i, name in enumerate(sys.argv[3:]):
        data = open(name, "rb").read()
        out[f"y{i}"] = coder.decode_y_hat(data)
        out[f"x{i}"] = coder.decode(data)[0]
    np.savez(sys.argv[2], **out)
    """
)


@pytest.mark.slow  # ~35 s each: a second process compiles the tiny model's programs
@pytest.mark.parametrize(
    "setting",
    [
        {"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2"},
        {"JAX_DEFAULT_MATMUL_PRECISION": "bfloat16"},
    ],
    ids=["sse4_2", "bfloat16_matmul"],
)
def test_files_decode_to_the_same_symbols_in_another_process_on_other_arithmetic(
    tmp_path, tiny_int, setting
):
    from tgic_jax.checkpoints.inference import load_inference, save_inference

    model, v, vi = tiny_int
    ckpt = tmp_path / "ckpt"
    save_inference(
        ckpt, TINY, v["params"], tables=v["tables"], integer_entropy=vi["integer_entropy"]
    )
    model, loaded, _ = load_inference(ckpt)
    assert sorted(loaded) == ["integer_entropy", "params", "tables"]
    coder = codec.Coder(model, loaded)
    images = [synthetic_image(97, 131, 1), synthetic_image(64, 64, 6)]
    results = coder.encode(images, [text_states(0), text_states(1)], with_reconstruction=True)
    files = []
    for k, r in enumerate(results):
        files.append(tmp_path / f"im{k}.tgic")
        files[-1].write_bytes(r.data)
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", **setting)
    out = tmp_path / "decoded.npz"
    proc = _python(_DECODE_SCRIPT, ckpt, out, *files, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as decoded:
        for k, r in enumerate(results):
            np.testing.assert_array_equal(decoded[f"y{k}"], coder.decode_y_hat(r.data))
            # g_s is float: the image may move in its last bits, no more.
            np.testing.assert_allclose(decoded[f"x{k}"], r.x_hat, atol=2e-2)
