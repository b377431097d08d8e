"""Evaluation metrics: accuracy, attack success rate, Lp distortions, SSIM, confidence; and
THE batched forward pass of advviz.

* :func:`logits`: the one batched, eval-mode, no-grad forward pass of a classifier, under the
  model-call contract of :mod:`advviz._modules` (input cast to the model's dtype, a tuple/dict
  output refused with "wrap the model", a shape or label error explained, the device checked).
  Everything that only needs a model's predictions uses it: the metrics below,
  :mod:`advviz.evaluate`, the attack trajectories, training's evaluation and the widgets.
* :func:`accuracy`, :func:`misclassification`, :func:`asr`, :func:`confidence`: model-based
  rates in ``[0, 1]``; the model is run in eval mode without gradients, in batches, and its
  ``training`` flag is restored.
* :func:`lp_norms`: the distortions of the CFR paper's Table I (``l0`` counts changed
  *elements*, i.e. a changed RGB pixel counts 3), per image then averaged.
* :func:`perturbation_survival` and :func:`accuracy_along`: how much of an attack a purifier
  leaves, and how little of it the classifier needs to be fooled.
* :func:`ssim`: structural similarity (Wang et al. 2004) with an 11x11 Gaussian window
  (sigma 1.5), ``K1=0.01``, ``K2=0.03``, data range 1, per channel, averaged.

All images are ``(B, C, H, W)`` float tensors in ``[0, 1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advviz._modules import check_model, model_guard, model_logits, module_device

__all__ = [
    "accuracy",
    "accuracy_along",
    "asr",
    "confidence",
    "logits",
    "lp_norms",
    "misclassification",
    "perturbation_survival",
    "prediction_change",
    "predictions",
    "ssim",
]


def _check_pair(x: torch.Tensor, x_adv: torch.Tensor, names: tuple[str, str] = ("x", "x_adv")) -> None:
    for t, n in zip((x, x_adv), names):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{n} must be a torch.Tensor of shape (B, C, H, W), got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"{n} must have shape (B, C, H, W), got {tuple(t.shape)}")
    if x.shape != x_adv.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {tuple(x.shape)} "
                         f"and {tuple(x_adv.shape)}")


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """The model's logits ``(B, K)`` for ``x`` ``(B, C, H, W)``: THE batched forward pass of advviz.

    The model runs in eval mode without gradients, ``batch_size`` images per call; its
    ``training`` flags are restored afterwards (:func:`~advviz._modules.model_guard`). Each call
    follows the model-call contract (:func:`~advviz._modules.model_logits`): the input is cast to
    the model's dtype (a float64 batch on a float32 model is run in float32), a tuple/dict output
    is refused with "wrap the model", a ``(B,)`` output is refused with what to return instead,
    and a batch of a size the model cannot take gives the size it takes.

    Args:
        model: classifier (an ``nn.Module``) mapping ``(B, C, H, W)`` in [0, 1] to logits.
        x: images ``(B, C, H, W)``, on the model's device (the device is taken from ``x``, never
            guessed from the model; a mismatch is refused).
        batch_size: images per forward call (>= 1).

    Returns:
        ``(B, K)`` logits on ``x``'s device, in the model's output dtype, detached. An empty
        batch is run as one call (``(0, K)`` for most models).

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` (a plain function), ``x`` is not a tensor,
            or the model returns a tuple/dict.
        ValueError: ``x`` is not ``(B, C, H, W)``, ``batch_size < 1``, the model is on another
            device than ``x``, or the model cannot take ``x``'s size.
    """
    check_model(model)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.ndim == 3 else ""
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}{hint}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = module_device(model, default=x.device)
    if dev != x.device:
        raise ValueError(f"the model is on {dev} and the images on {x.device}: move the images with "
                         f"x.to('{dev}') (or the model with model.to('{x.device}'))")
    bs = int(batch_size)
    with model_guard(model, freeze=False):
        return torch.cat([model_logits(model, x[s:s + bs]) for s in range(0, max(x.shape[0], 1), bs)])


def _labels(y: torch.Tensor, n: int, device: torch.device, name: str = "y",
            num_classes: int | None = None) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.ndim == 0:
        y = y.unsqueeze(0)
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if num_classes is not None and n and bool(((y < 0) | (y >= num_classes)).any()):
        bad = sorted({int(v) for v in y[(y < 0) | (y >= num_classes)].tolist()})
        raise ValueError(f"{name} holds {bad[:5]}, outside the model's {num_classes} classes [0, {num_classes}): "
                         "labels must be class indices of the model's outputs; check the labels' dataset "
                         "against the model's")
    return y.to(device=device, dtype=torch.long)


def predictions(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes ``(B,)`` of ``model`` on ``x`` ``(B, C, H, W)`` in [0, 1] (eval mode, restored)."""
    return logits(model, x, batch_size=batch_size).argmax(1)


def _labelled_predictions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                          name: str = "y") -> tuple[torch.Tensor, torch.Tensor]:
    """``(predictions (B,), labels (B,))``, the labels checked against the model's number of outputs."""
    z = logits(model, x, batch_size=batch_size)
    return z.argmax(1), _labels(y, x.shape[0], z.device, name, z.shape[1])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256) -> float:
    """Top-1 accuracy in ``[0, 1]``: the fraction of ``x`` ``(B, C, H, W)`` classified as ``y`` ``(B,)``.

    A label outside the model's classes ``[0, K)`` is refused (``ValueError``)."""
    pred, yy = _labelled_predictions(model, x, y, batch_size)
    return float((pred == yy).float().mean())


def misclassification(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256) -> float:
    """Misclassification rate in ``[0, 1]``: the fraction of ``x`` not classified as ``y`` (``1 - accuracy``)."""
    return 1.0 - accuracy(model, x, y, batch_size=batch_size)


def prediction_change(model: nn.Module, x_ref: torch.Tensor, x: torch.Tensor, *, batch_size: int = 256) -> float:
    """Fraction in ``[0, 1]`` of images whose predicted class differs from the prediction on ``x_ref``.

    The purifier paper's Table 3 "misclassification" counts an image when "the label of the real
    image is a cat and the classification result of the attacked [or recovered] image is a dog";
    its values (46.66% misclassified under FGSM at 24.64% accuracy) only fit when "the label of
    the real image" is the classifier's label for the clean image, so this is that rate.

    Args:
        model: classifier taking ``(B, C, H, W)`` in [0, 1].
        x_ref: reference (clean) images ``(B, C, H, W)``.
        x: attacked or purified images of the same shape.
    """
    _check_pair(x_ref, x, ("x_ref", "x"))
    ref = predictions(model, x_ref, batch_size=batch_size)
    return float((predictions(model, x, batch_size=batch_size) != ref).float().mean()) if x.shape[0] else 0.0


def asr(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None, *,
        batch_size: int = 256) -> float:
    """Attack success rate in ``[0, 1]``.

    Args:
        model: classifier taking ``(B, C, H, W)`` in [0, 1].
        x_adv: adversarial images ``(B, C, H, W)`` in [0, 1].
        y: true labels ``(B,)``.
        target: target labels ``(B,)`` of a targeted attack, or ``None``.

    Returns:
        Untargeted (``target=None``): the fraction predicted ``!= y``. Targeted: the fraction
        predicted ``== target``. Callers that report ASR over originally-correct images only
        (as the papers do) pass only those images.
    """
    if target is None:
        pred, yy = _labelled_predictions(model, x_adv, y, batch_size)
        return float((pred != yy).float().mean())
    pred, tt = _labelled_predictions(model, x_adv, target, batch_size, "target")
    return float((pred == tt).float().mean())


def perturbation_survival(x: torch.Tensor, x_adv: torch.Tensor, x_purified: torch.Tensor, *,
                          reduction: str = "mean") -> float | torch.Tensor:
    """Share of the attack's perturbation that survives purification, per image then averaged.

    With ``delta = x_adv - x`` and the purifier's error ``r = x_purified - x``, the survival of
    one image is the projection coefficient ``<r, delta> / <delta, delta>``: 1 when the
    purifier hands the perturbation through untouched (identity), 0 when nothing along
    ``delta`` is left (a perfect purifier, or errors orthogonal to the attack), negative when
    it overshoots. Errors orthogonal to ``delta`` (blur, noise) do not count: they are what
    clean accuracy measures. Images with ``delta = 0`` count as 0.

    Args:
        x: clean images ``(B, C, H, W)``.
        x_adv: attacked images, same shape.
        x_purified: the purifier's output for ``x_adv``, same shape.
        reduction: ``"mean"`` (a float) or ``"none"`` (a ``(B,)`` tensor).
    """
    _check_pair(x, x_adv)
    _check_pair(x, x_purified, ("x", "x_purified"))
    _check_reduction(reduction)
    delta = (x_adv - x).flatten(1).double()
    resid = (x_purified - x).flatten(1).double()
    dd = (delta * delta).sum(1)
    per = torch.where(dd > 0, (resid * delta).sum(1) / dd.clamp_min(1e-300), torch.zeros_like(dd)).float()
    if reduction == "none":
        return per
    return float(per.mean()) if per.numel() else 0.0


def accuracy_along(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                   fractions: tuple[float, ...] = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0), *,
                   batch_size: int = 256) -> list[dict[str, float]]:
    """Accuracy on ``x + a * (x_adv - x)`` (clipped to [0, 1]) for each fraction ``a`` of the perturbation.

    The curve says how much of an attack a purifier must remove if removing it is all the
    purifier does: one whose output keeps a share ``s`` of the perturbation
    (:func:`perturbation_survival`) and changes nothing else lands near the accuracy at
    ``a = s``; its other changes can move it either way.

    Args:
        model: classifier taking ``(B, C, H, W)`` in [0, 1].
        x: clean images ``(B, C, H, W)``; ``x_adv``: attacked images, same shape; ``y``: labels ``(B,)``.
        fractions: the values of ``a`` (each in [0, 1]).

    Returns:
        ``[{"fraction": a, "accuracy": acc}, ...]`` in the order of ``fractions``.
    """
    _check_pair(x, x_adv)
    bad = [a for a in fractions if not 0.0 <= float(a) <= 1.0]
    if bad:
        raise ValueError(f"fractions must lie in [0, 1], got {bad}")
    delta = x_adv - x
    return [{"fraction": float(a), "accuracy": accuracy(model, (x + float(a) * delta).clamp(0, 1), y,
                                                        batch_size=batch_size)} for a in fractions]


def confidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
               batch_size: int = 256) -> float:
    """Average softmax confidence in ``[0, 1]``.

    Args:
        model: classifier taking ``(B, C, H, W)`` in [0, 1].
        x: images ``(B, C, H, W)`` in [0, 1].
        y: optional labels ``(B,)``.

    Returns:
        With ``y=None``: the mean over images of the *maximum* softmax probability (the
        confidence of the predicted class, whatever it is). With ``y``: the mean softmax
        probability of class ``y`` (e.g. the true class, or a target class).
    """
    probs = F.softmax(logits(model, x, batch_size=batch_size).float(), dim=1)
    if y is None:
        return float(probs.max(1).values.mean())
    yy = _labels(y, x.shape[0], probs.device, num_classes=probs.shape[1])
    return float(probs.gather(1, yy.view(-1, 1)).mean())


def lp_norms(x: torch.Tensor, x_adv: torch.Tensor, *, reduction: str = "mean",
             tol: float = 0.0) -> dict[str, float] | dict[str, torch.Tensor]:
    """Distortions of ``x_adv`` from ``x`` as in the CFR paper's Table I.

    Per image, with ``d = x_adv - x`` over all ``C*H*W`` elements: ``l0`` the number of
    changed elements (``|d| > tol``; a changed RGB pixel counts up to 3), ``l1 = sum |d|``,
    ``l2 = sqrt(sum d^2)``, ``linf = max |d|``; all on the [0, 1] pixel scale.

    Args:
        x: clean images ``(B, C, H, W)``.
        x_adv: perturbed images, same shape.
        reduction: ``"mean"``: averages over the batch as Python floats; ``"none"``: ``(B,)``
            float64 tensors per image.
        tol: an element counts in ``l0`` when it changed by more than ``tol`` (default 0: any
            change).

    Returns:
        ``{"l0", "l1", "l2", "linf"}``.
    """
    _check_pair(x, x_adv)
    _check_reduction(reduction)
    d = (x_adv.detach().double() - x.detach().double()).flatten(1)
    a = d.abs()
    out = {
        "l0": (a > tol).sum(1).double(),
        "l1": a.sum(1),
        "l2": d.pow(2).sum(1).sqrt(),
        "linf": a.amax(1),
    }
    if reduction == "none":
        return out
    return {k: float(v.mean()) for k, v in out.items()}


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(dtype=dtype, device=device)


def ssim(x: torch.Tensor, y: torch.Tensor, *, reduction: str = "mean", window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
         data_range: float = 1.0) -> float | torch.Tensor:
    """Structural similarity index (Wang et al. 2004, eq. 13 with a Gaussian window).

    Local means, variances and covariance are Gaussian-weighted (``window_size`` x
    ``window_size``, ``sigma``, normalised to sum 1; population statistics) over the *valid*
    window positions (no padding); the SSIM map is averaged per channel, then over channels.
    Computed in float64.
    This equals scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=0)``. Images smaller than the
    window use the largest odd window that fits (same ``sigma``).

    Args:
        x: images ``(B, C, H, W)`` in [0, ``data_range``].
        y: images of the same shape.
        reduction: ``"mean"`` (a float, averaged over the batch) or ``"none"`` (``(B,)``
            float64 tensor).
        window_size: odd window side (11).
        sigma: Gaussian standard deviation in pixels (1.5).
        k1: stability constant ``K1`` (0.01).
        k2: stability constant ``K2`` (0.03).
        data_range: dynamic range ``L`` of the pixel values (1).

    Returns:
        SSIM in ``[-1, 1]`` (1 for identical images).
    """
    _check_pair(x, y, ("x", "y"))
    _check_reduction(reduction)
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd number, got {window_size}")
    b, c, h, w = x.shape
    size = min(window_size, h - (1 - h % 2), w - (1 - w % 2))  # largest odd side that fits
    dtype = torch.float64  # E[x^2] - E[x]^2 in float32 loses ~1e-4 of SSIM on flat regions
    xx = x.detach().to(dtype).reshape(b * c, 1, h, w)
    yy = y.detach().to(dtype).reshape(b * c, 1, h, w)
    win = _gaussian_window(size, sigma, dtype, xx.device).view(1, 1, size, size)
    stack = torch.cat([xx, yy, xx * xx, yy * yy, xx * yy], dim=1)  # (B*C, 5, H, W)
    stats = F.conv2d(stack, win.expand(5, 1, size, size), groups=5)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.unbind(1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    per_image = smap.flatten(1).mean(1).view(b, c).mean(1)
    if reduction == "none":
        return per_image
    return float(per_image.mean())
