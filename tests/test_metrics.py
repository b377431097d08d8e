"""advviz.metrics: exact values on hand-made tensors, SSIM against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advviz import metrics
from tests.helpers import LinearImageModel, TinyConvNet


def _linear_model() -> LinearImageModel:
    # 1x1x2 images, 3 classes: logits = (x0, x1, 0.5)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([0.0, 0.0, 0.5])
    return LinearImageModel(w, b, (1, 1, 2))


def _images(*pairs: tuple[float, float]) -> torch.Tensor:
    return torch.tensor(pairs, dtype=torch.float32).view(-1, 1, 1, 2)


# ----------------------------------------------------------------------------------- lp norms

def test_lp_norms_exact_values() -> None:
    x = torch.zeros(2, 3, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 0.5
    x[0, 1, 1, 1] = 0.25  # x_adv keeps 0 there: a change of -0.25
    per = metrics.lp_norms(x, x_adv, reduction="none")
    assert per["l0"].tolist() == [2.0, 0.0]
    assert per["l1"].tolist() == pytest.approx([0.75, 0.0])
    assert per["l2"].tolist() == pytest.approx([math.sqrt(0.3125), 0.0])
    assert per["linf"].tolist() == pytest.approx([0.5, 0.0])
    mean = metrics.lp_norms(x, x_adv)
    assert mean == pytest.approx({"l0": 1.0, "l1": 0.375, "l2": math.sqrt(0.3125) / 2, "linf": 0.25})
    assert all(isinstance(v, float) for v in mean.values())


def test_lp_norms_counts_elements_not_pixels_and_tol() -> None:
    x = torch.full((1, 3, 4, 4), 0.5)
    x_adv = x.clone()
    x_adv[0, :, 2, 3] = 1.0  # one RGB pixel: 3 elements
    x_adv[0, 0, 0, 0] += 1e-3
    assert metrics.lp_norms(x, x_adv)["l0"] == 4.0
    assert metrics.lp_norms(x, x_adv, tol=1e-2)["l0"] == 3.0
    assert metrics.lp_norms(x, x)["l0"] == 0.0


def test_lp_norms_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        metrics.lp_norms(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
    with pytest.raises(ValueError, match="reduction"):
        metrics.lp_norms(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), reduction="sum")


# ------------------------------------------------------------------------ model-based metrics

def test_asr_accuracy_misclassification_exact() -> None:
    model = _linear_model()
    # predictions: 0, 1, 2, 0
    x = _images((0.9, 0.1), (0.2, 0.8), (0.1, 0.2), (0.7, 0.6))
    assert metrics.predictions(model, x).tolist() == [0, 1, 2, 0]
    y = torch.tensor([0, 1, 1, 2])
    assert metrics.accuracy(model, x, y) == pytest.approx(0.5)
    assert metrics.misclassification(model, x, y) == pytest.approx(0.5)
    assert metrics.asr(model, x, y) == pytest.approx(0.5)
    target = torch.tensor([2, 1, 2, 1])
    assert metrics.asr(model, x, y, target) == pytest.approx(0.5)
    assert metrics.asr(model, x, y, torch.tensor([0, 1, 2, 0])) == pytest.approx(1.0)
    assert metrics.asr(model, x, torch.tensor([0, 1, 2, 0])) == pytest.approx(0.0)
    # prediction_change compares with the predictions on reference images, not with labels
    x_ref = _images((0.9, 0.1), (0.9, 0.1), (0.1, 0.2), (0.2, 0.8))  # predictions 0, 0, 2, 1
    assert metrics.prediction_change(model, x_ref, x) == pytest.approx(0.5)
    assert metrics.prediction_change(model, x, x) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        metrics.prediction_change(model, x_ref[:2], x)
    # batching does not change the result
    assert metrics.asr(model, x, y, batch_size=3) == pytest.approx(0.5)


def test_perturbation_survival_exact() -> None:
    x = _images((0.2, 0.2), (0.5, 0.5), (0.3, 0.3))
    delta = _images((0.1, -0.1), (0.0, 0.2), (0.0, 0.0))
    x_adv = x + delta
    # identity keeps all of it, a perfect purifier none
    assert metrics.perturbation_survival(x, x_adv, x_adv, reduction="none").tolist() == pytest.approx([1, 1, 0])
    assert metrics.perturbation_survival(x, x_adv, x) == pytest.approx(0.0)
    # image 0 keeps half of delta plus an orthogonal error (0.05, 0.05), which does not count;
    # image 1 overshoots to -delta; image 2 has no perturbation: 0
    purified = x + _images((0.05 + 0.05, 0.05 - 0.05), (0.0, -0.2), (0.4, 0.0))
    per = metrics.perturbation_survival(x, x_adv, purified, reduction="none")
    assert per.tolist() == pytest.approx([0.5, -1.0, 0.0])
    assert metrics.perturbation_survival(x, x_adv, purified) == pytest.approx(-0.5 / 3)
    with pytest.raises(ValueError, match="same shape"):
        metrics.perturbation_survival(x, x_adv, purified[:2])
    with pytest.raises(ValueError, match="reduction"):
        metrics.perturbation_survival(x, x_adv, purified, reduction="sum")


def test_accuracy_along_exact() -> None:
    model = _linear_model()  # logits (x0, x1, 0.5)
    x = _images((0.9, 0.1), (0.2, 0.9))  # predictions 0, 1
    x_adv = _images((0.1, 0.9), (0.9, 0.4))  # predictions 1, 0
    y = torch.tensor([0, 1])
    got = metrics.accuracy_along(model, x, x_adv, y, fractions=(0.0, 0.25, 0.55, 0.6, 1.0))
    # along the way the larger of x0, x1 stays above 0.5 (class 2's logit); image 0 flips once
    # 0.9 - 0.8a < 0.1 + 0.8a (a > 0.5), image 1 once 0.2 + 0.7a > 0.9 - 0.5a (a > 0.583)
    assert [r["fraction"] for r in got] == [0.0, 0.25, 0.55, 0.6, 1.0]
    assert [r["accuracy"] for r in got] == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.accuracy_along(model, x, x_adv, y, fractions=(8.0,))


def test_confidence_exact() -> None:
    model = _linear_model()
    x = _images((1.0, 0.0), (0.0, 0.0))
    p0 = torch.softmax(torch.tensor([1.0, 0.0, 0.5]), 0)
    p1 = torch.softmax(torch.tensor([0.0, 0.0, 0.5]), 0)
    assert metrics.confidence(model, x) == pytest.approx(float(p0[0] + p1[2]) / 2, rel=1e-6)
    assert metrics.confidence(model, x, torch.tensor([1, 0])) == pytest.approx(float(p0[1] + p1[0]) / 2, rel=1e-6)


def test_metrics_restore_training_mode_and_leave_grads() -> None:
    model = TinyConvNet()
    model.train()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, dtype=torch.long)
    metrics.accuracy(model, x, y)
    metrics.confidence(model, x)
    assert model.training and model.bn1.training
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------- the batched forward

def test_logits_is_the_eval_mode_forward_in_batches() -> None:
    model = TinyConvNet(num_classes=3).train()
    x = torch.rand(7, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    z = metrics.logits(model, x, batch_size=3)
    assert model.training and model.bn1.training  # restored
    with torch.no_grad():
        ref = model.eval()(x)
    model.train()
    torch.testing.assert_close(z, ref)
    assert not z.requires_grad and z.shape == (7, 3)
    assert torch.equal(metrics.predictions(model, x, batch_size=2), ref.argmax(1))
    assert metrics.logits(model, x[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        metrics.logits(model, x, batch_size=0)


def test_logits_casts_the_input_to_the_model_dtype() -> None:
    model = TinyConvNet(num_classes=3).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    z64 = metrics.logits(model, x.double())
    assert z64.dtype == torch.float32
    assert torch.equal(z64, metrics.logits(model, x))  # x.double().float() is x exactly
    assert metrics.accuracy(model.double(), x, torch.zeros(4, dtype=torch.long)) >= 0.0  # float64 model, float32 x


def test_logits_refuses_a_model_on_another_device() -> None:
    model = TinyConvNet(num_classes=3).to("meta")
    with pytest.raises(ValueError, match=r"the model is on meta and the images on cpu: move the images"):
        metrics.logits(model, torch.rand(2, 3, 8, 8))


def test_logits_refuses_tuple_outputs_and_functions() -> None:
    class Pair(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = TinyConvNet()

        def forward(self, x):
            return self.net(x), x

    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(TypeError, match="returns only the logits"):
        metrics.logits(Pair(), x)
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        metrics.logits(lambda t: t.flatten(1), x)


# ------------------------------------------------------------------------------------- SSIM

def _ssim_reference(a: np.ndarray, b: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    """Float64 loops over every valid window (one channel), straight from Wang et al. (2004)."""
    r = np.arange(win) - (win - 1) / 2
    g = np.exp(-r ** 2 / (2 * sigma ** 2))
    w2 = np.outer(g, g)
    w2 /= w2.sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for i in range(a.shape[0] - win + 1):
        for j in range(a.shape[1] - win + 1):
            pa, pb = a[i:i + win, j:j + win], b[i:i + win, j:j + win]
            ma, mb = (w2 * pa).sum(), (w2 * pb).sum()
            va = (w2 * (pa - ma) ** 2).sum()
            vb = (w2 * (pb - mb) ** 2).sum()
            cov = (w2 * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_identity_is_one() -> None:
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    assert metrics.ssim(x, x, reduction="none").tolist() == pytest.approx([1.0] * 3, abs=1e-6)


def test_ssim_constant_images_closed_form() -> None:
    a, b = 0.2, 0.7
    x = torch.full((1, 1, 12, 12), a)
    y = torch.full((1, 1, 12, 12), b)
    c1 = 0.01 ** 2
    assert metrics.ssim(x, y) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)


def test_ssim_matches_float64_loops_per_channel_and_image() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 2, 14, 13, generator=gen, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(2, 2, 14, 13, generator=gen, dtype=torch.float64)).clamp(0, 1)
    per = metrics.ssim(x, y, reduction="none")
    ref = [np.mean([_ssim_reference(x[i, c].numpy(), y[i, c].numpy()) for c in range(2)]) for i in range(2)]
    assert per.tolist() == pytest.approx(ref, rel=1e-10)
    assert metrics.ssim(x, y) == pytest.approx(float(np.mean(ref)), rel=1e-10)
    # float32 input gives the same within float32 accuracy
    assert metrics.ssim(x.float(), y.float()) == pytest.approx(float(np.mean(ref)), abs=1e-5)


def test_ssim_small_images_use_the_largest_odd_window() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = (x * 0.8 + 0.1).clamp(0, 1)
    assert metrics.ssim(x, y) == pytest.approx(_ssim_reference(x[0, 0].numpy(), y[0, 0].numpy(), win=7), rel=1e-10)


def test_ssim_matches_scikit_image() -> None:
    skm = pytest.importorskip("skimage.metrics")
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 32, 32, generator=gen)
    y = (x + 0.1 * torch.randn(2, 3, 32, 32, generator=gen)).clamp(0, 1)
    per = metrics.ssim(x, y, reduction="none")
    for i in range(2):
        ref = skm.structural_similarity(x[i].double().numpy(), y[i].double().numpy(), gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0)
        assert float(per[i]) == pytest.approx(ref, abs=1e-5)


def test_ssim_decreases_with_noise() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(1, 3, 32, 32, generator=gen)
    noise = torch.randn(1, 3, 32, 32, generator=gen)
    values = [metrics.ssim(x, (x + s * noise).clamp(0, 1)) for s in (0.01, 0.05, 0.2)]
    assert values[0] > values[1] > values[2]
