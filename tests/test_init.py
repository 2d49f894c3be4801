"""Initial parameters have the distributions of the authors' PyTorch model, layer by layer.

Their TACO keeps PyTorch's defaults (CompressAI >= 1.2 no longer re-initializes) except
`nn.init.kaiming_normal_` on the Injector/Extractor projections (modules/transform/
analysis.py) and MultiheadAttention's own `_reset_parameters` (xavier_uniform in_proj,
zero in_proj and out_proj biases).
"""

import re

import flax
import jax
import numpy as np
import pytest

from tgic_jax.model.taco import TACO, ModelConfig, init_variables

# Flax paths of the transposed convolutions (torch's fan_in is out * kh * kw for them).
_TRANSPOSED = re.compile(r"^(synthesis_transform_(1|5|10|14)|increase_\d+)$")


@pytest.fixture(scope="module")
def params():
    model = TACO(ModelConfig(N=64, M=96, slices=(8, 8, 16, 16, 48), text_dim=128, heads=8))
    variables = init_variables(model, jax.random.key(0, impl="unsafe_rbg"))
    flat = flax.traverse_util.flatten_dict(jax.device_get(variables["params"]))
    return {"/".join(k): np.asarray(v, np.float64) for k, v in flat.items()}


def _std_close(values, want, rel):
    return abs(values.std() / want - 1) < rel


def test_every_layer_starts_from_the_authors_distribution(params):
    checked = {"conv": 0, "tconv": 0, "linear": 0, "kaiming_normal": 0, "in_proj": 0}
    for path, v in params.items():
        parts = path.split("/")
        module, leaf = parts[-2], parts[-1]
        if leaf == "kernel" and v.ndim == 4:  # Conv2d / ConvTranspose2d [k, k, in, out]
            k, _, cin, cout = v.shape
            tconv = bool(_TRANSPOSED.match(module))
            bound = 1 / np.sqrt(k * k * (cout if tconv else cin)) * (1 + 1e-6)  # float32
            bias = params[path[: -len("kernel")] + "bias"]
            assert np.abs(v).max() <= bound and np.abs(v).max() > 0.9 * bound, path
            if v.size >= 1000:
                assert _std_close(v, bound / np.sqrt(3), 0.1), path
            # Bias ~ U(-bound, bound) with the same fan_in, as PyTorch's default (not zero).
            assert np.abs(bias).max() <= bound, path
            assert np.abs(bias).max() > (0.5 if bias.size >= 8 else 0.05) * bound, path
            checked["tconv" if tconv else "conv"] += 1
        elif leaf == "kernel" and module.endswith("_dim_proj"):  # kaiming_normal_
            std = np.sqrt(2 / v.shape[0])
            assert _std_close(v, std, 0.05) and abs(v.mean()) < 0.05 * std, path
            assert np.abs(v).max() > 2 * std, path  # a normal's tails, not a bounded uniform
            bias = params[path[: -len("kernel")] + "bias"]
            bound = 1 / np.sqrt(v.shape[0]) * (1 + 1e-6)
            assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.5 * bound, path
            checked["kaiming_normal"] += 1
        elif leaf == "kernel" and module == "out_proj":  # torch Linear default, zero bias
            bound = 1 / np.sqrt(v.shape[0]) * (1 + 1e-6)
            assert np.abs(v).max() <= bound and _std_close(v, bound / np.sqrt(3), 0.1), path
            assert not np.any(params[path[: -len("kernel")] + "bias"]), path
            checked["linear"] += 1
        elif leaf == "in_proj_weight":  # xavier_uniform on [3E, E]
            e = v.shape[1]
            bound = np.sqrt(6 / (4 * e)) * (1 + 1e-6)
            assert np.abs(v).max() <= bound and _std_close(v, bound / np.sqrt(3), 0.05), path
            assert not np.any(params[path[: -len("weight")] + "bias"]), path
            checked["in_proj"] += 1
        elif module.endswith("_norm") or module.startswith("norm"):
            assert np.all(v == (1.0 if leaf == "scale" else 0.0)), path
        elif leaf == "gamma":
            assert not np.any(v), path  # the Injector starts as a LayerNorm
    assert checked["conv"] > 50 and checked["tconv"] == 7, checked
    # g_a has 2 Injectors and 1 Extractor, each with one projection and one attention.
    assert checked["kaiming_normal"] == 3, checked
    assert checked["in_proj"] == 3 and checked["linear"] == 3, checked


def test_entropy_bottleneck_starts_as_compressai_does(params):
    eb = {k.split("/")[-1]: v for k, v in params.items() if k.startswith("entropy_bottleneck/")}
    np.testing.assert_array_equal(eb["quantiles"][:, 0], np.tile([-10.0, 0.0, 10.0], (64, 1)))
    scale = 10 ** (1 / 5)
    np.testing.assert_allclose(eb["matrices_0"], np.log(np.expm1(1 / scale / 3)), rtol=1e-6)
    np.testing.assert_allclose(eb["matrices_4"], np.log(np.expm1(1 / scale / 1)), rtol=1e-6)
    assert np.abs(eb["biases_0"]).max() <= 0.5 and eb["biases_0"].std() > 0.2
    assert not np.any(eb["factors_0"])
