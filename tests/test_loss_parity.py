"""The training loss of configs/taco.py against the authors' criterion (shared fixture).

../shared/reference/loss_parity: their `RateDistortionLoss` on 2 groups of 8 images with a
tiny random CLIP, averaged over the groups as DDP does. Skips when the fixture is absent.
"""

from pathlib import Path

import jax
import numpy as np
import pytest

from tgic_jax.train import losses

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "reference" / "loss_parity"

pytestmark = pytest.mark.skipif(
    not (FIXTURE / "expected.npz").is_file(), reason="loss_parity fixture not present"
)

# case -> the weights the fixture zeroed.
CASES = {"joint_only": dict(lmbda=0.0, k_p=0.0), "lpips_only": dict(lmbda=0.0, k_j=0.0), "full": {}}


@pytest.fixture(scope="module")
def fixture():
    return dict(np.load(FIXTURE / "expected.npz"))


def _config(**zeroed):
    from configs.taco import get_config

    config = get_config("lmbda=0.0004")
    config.loss.clip_path = str(FIXTURE / "clip")
    for key, value in zeroed.items():
        config.loss[key] = value
    return config.loss


def _value_and_grad(loss_config, data):
    loss_fn, frozen = losses.build_loss(loss_config)
    x = data["x_u8"].astype(np.float32) / 255.0
    lik = {"y": data["lik_y"], "z": data["lik_z"]}

    def total(x_hat):
        return loss_fn(frozen, {"x_hat": x_hat, "likelihoods": lik}, x, data["text_embeds"])

    (loss, metrics), grad = jax.jit(jax.value_and_grad(total, has_aux=True))(
        data["x_hat"].astype(np.float32)
    )
    return float(loss), jax.device_get(metrics), np.asarray(grad, np.float64)


@pytest.mark.parametrize("case", list(CASES))
def test_taco_config_loss_matches_the_authors_criterion_value_and_gradient(case, fixture):
    loss, metrics, grad = _value_and_grad(_config(**CASES[case]), fixture)
    assert loss == pytest.approx(float(fixture[f"{case}_value"]), rel=1e-3)
    assert float(metrics["bpp"]) == pytest.approx(float(fixture["bpp"]), rel=1e-4)
    norm = np.linalg.norm(grad)
    assert norm == pytest.approx(float(fixture[f"{case}_grad_norm"]), rel=1e-3)
    seed = int(fixture["direction_seed"])
    directions = np.random.default_rng(seed).standard_normal(
        (16, 16, 256, 256, 3), dtype=np.float32
    )
    proj = np.einsum("dbhwc,bhwc->d", directions, grad.astype(np.float32), dtype=np.float64)
    want = fixture[f"{case}_grad_proj"]
    # Relative to the projection's natural scale (|g| for a unit-variance direction):
    # single projections can be near 0, where a per-entry relative bound means nothing.
    np.testing.assert_allclose(proj, want, rtol=1e-3, atol=1e-3 * norm)
    if "lpips" in metrics:
        assert float(metrics["lpips"]) == pytest.approx(float(fixture["lpips_mean"]), rel=1e-3)


def _value(loss_config, data):
    """The loss and its terms alone: a forward pass compiles in a fraction of the gradient's."""
    loss_fn, frozen = losses.build_loss(loss_config)
    x = data["x_u8"].astype(np.float32) / 255.0
    outputs = {
        "x_hat": data["x_hat"].astype(np.float32),
        "likelihoods": {"y": data["lik_y"], "z": data["lik_z"]},
    }
    loss, metrics = jax.jit(loss_fn)(frozen, outputs, x, data["text_embeds"])
    return float(loss), jax.device_get(metrics)


@pytest.mark.slow  # four compiles of the loss with CLIP and LPIPS
def test_zeroing_a_weight_removes_exactly_that_term(fixture):
    full, metrics = _value(_config(), fixture)
    no_rd, _ = _value(_config(lmbda=0.0), fixture)
    no_lpips, m_nolp = _value(_config(k_p=0.0), fixture)
    no_joint, m_noj = _value(_config(k_j=0.0), fixture)
    assert "lpips" not in m_nolp and "joint" not in m_noj
    assert full - no_rd == pytest.approx(float(metrics["distortion"]), rel=1e-4)
    assert full - no_lpips == pytest.approx(3.5 * float(metrics["lpips"]), rel=1e-4)
    assert full - no_joint == pytest.approx(0.0025 * float(metrics["joint"]), rel=1e-3)


def test_joint_term_is_the_mean_of_per_group_terms(fixture):
    clip_model = losses.build_clip(str(FIXTURE / "clip"))
    x = fixture["x_u8"].astype(np.float32) / 255.0
    x_hat = fixture["x_hat"].astype(np.float32)
    text = fixture["text_embeds"]

    def term(sl, group):
        args = (clip_model, clip_model.params, x_hat[sl], x[sl], text[sl])
        return float(losses.clip_joint_term(*args, group_size=group)[0])

    by_hand = (term(slice(0, 8), 0) + term(slice(8, 16), 0)) / 2
    assert term(slice(0, 16), 8) == pytest.approx(by_hand, rel=1e-5)
    # One group of 16 is another number: 16 negatives and a norm over 16 rows.
    assert abs(term(slice(0, 16), 0) - by_hand) > 1e-3 * abs(by_hand)
    with pytest.raises(ValueError, match="joint_group_size"):
        losses.clip_joint_term(
            clip_model, clip_model.params, x_hat[:12], x[:12], text[:12], group_size=8
        )
