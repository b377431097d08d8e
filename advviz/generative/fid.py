"""Fréchet distance between feature statistics (FID: Heusel et al. 2017; Dowson & Landau 1982).

``d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})`` between Gaussians fitted to the
features of two image sets. The features are Inception-v3's 2048-d pool features when their
weights are available (``pt_inception-2015-12-05`` is not bundled; torchvision's ImageNet
Inception-v3 ``inception_v3_google-0cc3c7bd.pth`` from ``$ADVVIZ_WEIGHTS`` or the torch hub
cache, images resized to 299x299); otherwise a *named classifier's penultimate features*
(e.g. LeNet-5's 200-d FC layer for digits), and every result says which: numbers computed on
different feature networks are not comparable with each other or with the paper's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advviz import artifacts, models
from advviz._modules import module_device
from advviz.explain import capture_layers

__all__ = ["FeatureNetwork", "feature_statistics", "fid", "fid_network", "frechet_distance", "inception_features",
           "penultimate"]


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, float64) of ``(N, D)`` features."""
    f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, float)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (float64).

    ``Tr((S_1 S_2)^{1/2})`` is computed as the sum of square roots of the eigenvalues of
    ``S_1^{1/2} S_2 S_1^{1/2}`` (symmetric positive semi-definite, so no complex parts).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    w1, v1 = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    m = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


class FeatureNetwork(nn.Module):
    """``(B, C, H, W)`` in [0, 1] -> ``(B, D)`` features, with a ``name`` saying which network."""

    def __init__(self, fn: nn.Module | Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        super().__init__()
        self.fn = fn
        self.name = name

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x).flatten(1)


def penultimate(model: nn.Module, name: str) -> FeatureNetwork:
    """Penultimate features of a zoo classifier: the input of its last ``nn.Linear`` (the forward
    pass stops there: the last layer itself is not computed)."""
    last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError(f"{name} has no linear layer to take penultimate features from")
    lname, layer = last[-1]

    class _Pen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # the first call's input (the old hook kept store[0]); clone=False: read, never changed
            with capture_layers(self.model, {lname: layer}, inputs=True, clone=False, stop=True) as cap:
                self.model.eval()(x)
            return cap.last[lname]

    return FeatureNetwork(_Pen(), f"{name} penultimate features (not Inception)")


def _inception() -> FeatureNetwork | None:
    """Inception-v3's features if the store has its weights on disk (artefact ``inception_v3_imagenet``:
    a weight folder, advviz's cache or torch's hub cache; never downloaded here), else ``None``."""
    if not artifacts.status("inception_v3_imagenet")["present"]:
        return None
    return inception_features(artifacts.fresh("inception_v3_imagenet"))


def inception_features(net: nn.Module) -> FeatureNetwork:
    """Pool features of torchvision's Inception-v3 ``net`` (its ``fc`` replaced by the identity).

    The Google weights (``inception_v3_google-0cc3c7bd.pth``) expect pixels scaled as
    ``(x - 0.5) / 0.5``; torchvision reaches that from ImageNet-normalised input only through
    ``transform_input=True``, which ``inception_v3(weights=None)`` leaves off. So ``net`` must be
    built with ``transform_input=False`` and advviz feeds ``(x - 0.5) / 0.5`` directly (after a
    bilinear resize to 299x299; grey images repeated over 3 channels).

    Raises:
        ValueError: ``net`` has ``transform_input=True`` (it would transform the input twice).
    """
    if getattr(net, "transform_input", False):
        raise ValueError("inception_features feeds (x - 0.5) / 0.5 itself: build the network with "
                         "transform_input=False")
    net.fc = nn.Identity()
    net.eval()

    def fn(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return net((x - 0.5) / 0.5)

    return FeatureNetwork(_Wrap(net, fn), "Inception-v3 (torchvision ImageNet) pool features")


class _Wrap(nn.Module):
    def __init__(self, net: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self._fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)


def fid_network(fallback: str | nn.Module = "lenet5_digits", *, prefer_inception: bool = True,
                fallback_name: str | None = None) -> FeatureNetwork:
    """Inception-v3 features when available, else the penultimate features of ``fallback``
    (a pretrained zoo name or a model; ``fallback_name`` labels a model)."""
    if prefer_inception:
        inc = _inception()
        if inc is not None:
            return inc
    if isinstance(fallback, str):
        return penultimate(models.load(fallback), fallback)
    return penultimate(fallback, fallback_name or type(fallback).__name__)


@torch.no_grad()
def fid(x: torch.Tensor, y: torch.Tensor, network: FeatureNetwork, *, batch_size: int = 500) -> float:
    """FID between image sets ``x`` and ``y`` (each ``(N, C, H, W)`` in [0, 1]) on ``network``'s
    features. Report it with ``network.name``."""
    dev = module_device(network, x.device)

    def feats(imgs: torch.Tensor) -> torch.Tensor:
        return torch.cat([network(b.to(dev)).cpu() for b in imgs.split(batch_size)])

    return frechet_distance(*feature_statistics(feats(x)), *feature_statistics(feats(y)))
