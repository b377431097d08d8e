"""Jacobian-based Saliency Map Attack (Papernot et al. 2016), batched.

Papernot, McDaniel, Jha, Fredrikson, Celik, Swami, "The Limitations of Deep Learning in
Adversarial Settings", IEEE EuroS&P 2016, Algorithms 2 and 3 (saliency map over pairs of
features).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from advviz._registry import ParamSpec, check_params
from advviz.attacks._api import register_attack
from advviz.attacks._core import attack_forward, check_images, check_labels, to_input_dtype, working_copy

__all__ = ["jsma"]

_PARAMS = (
    ParamSpec("theta", 1.0, kind="float", low=-1.0, high=1.0, step=0.05,
              help="change applied to each selected feature (+1: set to the maximum; the CFR paper uses 0.3; "
                   "negative values decrease features)"),
    ParamSpec("gamma", 0.1, kind="float", low=0.0, high=1.0, step=0.01,
              help="maximum fraction of the input features (elements of C*H*W) that may change"),
    ParamSpec("targeted", False, kind="bool", help="y holds target labels (else: untargeted, see the docstring)"),
)


def _grads(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
           target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of the target logit and of the sum of the other logits w.r.t. ``x`` (flattened)."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        logits = model(xi)
        z_t = logits.gather(1, target.view(-1, 1)).sum()
        (g_t,) = torch.autograd.grad(z_t, xi, retain_graph=True)
        (g_all,) = torch.autograd.grad(logits.sum(), xi)
    return g_t.flatten(1), (g_all - g_t).flatten(1), logits.detach()


def _pair_search(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, float]:
    """Exhaustive search over pairs of one image's features: the minimum of
    ``relu(a_p + a_q) * (b_p + b_q)``, ``p != q`` (negative exactly for admissible pairs)."""
    n = a.numel()
    score = (a.view(-1, 1) + a.view(1, -1)).clamp_min_(0.0)
    score.diagonal().zero_()
    score.mul_(b.view(-1, 1) + b.view(1, -1))
    val, idx = score.flatten().min(0)
    return int(idx) // n, int(idx) % n, float(val)


def _best_pairs(alpha: torch.Tensor, beta: torch.Tensor, domain: torch.Tensor, increase: bool,
                shortlist: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each row, the pair ``(p, q)``, ``p != q`` in the domain, maximising the saliency map.

    Increasing features: maximise ``(a_p + a_q) * |b_p + b_q|`` subject to ``a_p + a_q > 0`` and
    ``b_p + b_q < 0`` (Algorithm 3); decreasing: the signs flip. Equivalently, minimise
    ``relu(a_p + a_q) * (b_p + b_q)``, negative exactly for admissible pairs (features outside
    the domain get ``a = -inf``).

    Exact, with branch and bound instead of the full ``N x N`` table: the best pair among a
    shortlist (the ``shortlist`` largest ``a`` and smallest ``b``) gives a score ``s0``; any
    pair through ``p`` scores at most ``relu(a_p + max a) * relu(-b_p - min b)``, so only the
    features whose bound reaches ``s0`` can belong to the optimum, and the exhaustive search
    runs over those. Returns ``(p, q, found)``; ``found`` is False where no pair is admissible.
    """
    m, n = alpha.shape
    if not increase:
        alpha, beta = -alpha, -beta
    alpha = alpha.masked_fill(~domain, float("-inf"))
    beta = beta.masked_fill(~domain, 0.0)
    best_p = torch.zeros(m, dtype=torch.long, device=alpha.device)
    best_q = torch.zeros(m, dtype=torch.long, device=alpha.device)
    found = torch.zeros(m, dtype=torch.bool, device=alpha.device)
    for i in range(m):
        a, b, d = alpha[i], beta[i], domain[i]
        if int(d.sum()) < 2:
            continue
        k = min(shortlist, n)
        short = torch.cat([a.topk(k).indices, b.masked_fill(~d, float("inf")).topk(k, largest=False).indices])
        short = short[d[short]].unique()
        _, _, s0 = _pair_search(a[short], b[short]) if short.numel() >= 2 else (0, 0, 0.0)
        a_max, b_min = a.max(), b[d].min()
        bound = (a + a_max).clamp_min(0.0) * (-b - b_min).clamp_min(0.0)
        # keep every feature that may reach the shortlist's score (with slack for rounding)
        cand = (d & (bound >= -s0 * (1 - 1e-4)) & (bound > 0)).nonzero().flatten()
        if cand.numel() < 2:
            continue
        p, q, val = _pair_search(a[cand], b[cand])
        if val < 0:
            best_p[i], best_q[i], found[i] = cand[p], cand[q], True
    return best_p, best_q, found


@register_attack("jsma", params=_PARAMS, paper="Papernot et al. 2016 (EuroS&P), Algorithms 2-3",
                 norm="l0", targeted=True, budget="gamma",
                 description="JSMA: change pairs of features chosen by the Jacobian saliency map",
                 quick={"gamma": 0.05})
def jsma(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, theta: float = 1.0, gamma: float = 0.1,
         targeted: bool = False) -> torch.Tensor:
    """Jacobian-based Saliency Map Attack (Papernot et al. 2016), L0 threat model.

    Each iteration computes the forward derivative of the logits (the paper uses the last
    hidden layer rather than the softmax output) w.r.t. the input, and over all pairs of
    features ``(p, q)`` still in the image's search domain selects the pair maximising the
    saliency map ``(a_p + a_q) * |b_p + b_q|`` with ``a = dZ_t/dx`` (target logit),
    ``b = sum_{j != t} dZ_j/dx``, under ``a_p + a_q > 0`` and ``b_p + b_q < 0`` (for
    ``theta > 0``; signs flip for ``theta < 0``). Both features move by ``theta`` (clipped to
    [0, 1]) and leave the search domain, so each feature changes at most once. The search
    stops per image when it succeeds, when ``floor(gamma * C*H*W / 2)`` pairs were changed, or
    when no admissible pair is left. Features are the elements of ``C*H*W`` (each colour
    channel of a pixel is its own feature, as in the CFR paper's Table I where l0 counts
    elements). The search domain starts as the features that can still move in ``theta``'s
    direction. Images are batched, each with its own search domain. The pair search is exact
    but pruned by branch and bound (see ``_best_pairs``), instead of scoring all ``N^2`` pairs.

    Untargeted use (``targeted=False``, ``y`` the true labels): the target of each image is its
    *second most likely* class on the clean input (the runner-up, usually the cheapest target),
    and the search stops as soon as the prediction differs from ``y`` (any class).

    Args:
        model: classifier mapping ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.
        x: images ``(B, C, H, W)`` in [0, 1] (not modified).
        y: ``(B,)`` true labels, or target labels with ``targeted=True``.
        theta: change per selected feature, in [-1, 1] (default +1, i.e. set to the maximum,
            as in the paper; the CFR paper's Table I uses 0.3).
        gamma: maximum fraction of features changed, in [0, 1] (default 0.1; the paper used
            up to 14.5% on MNIST).
        targeted: ``y`` holds target labels.

    Returns:
        Adversarial images ``(B, C, H, W)`` in [0, 1], detached; at most
        ``floor(gamma * C*H*W)`` elements differ from ``x`` per image.
    """
    check_params(_PARAMS, {"theta": theta, "gamma": gamma, "targeted": targeted}, "jsma")
    check_images(x)
    if theta == 0:
        raise ValueError("theta must be non-zero (the change applied to each selected feature)")
    xc = working_copy(x)
    with attack_forward(model, xc) as net:
        with torch.no_grad():
            logits0 = net(xc)
        y = check_labels(y, x, logits0.shape[1])
        n = x[0].numel()
        increase = theta > 0
        if targeted:
            target = y
        else:
            runner = logits0.detach().clone()
            runner.scatter_(1, y.view(-1, 1), float("-inf"))
            target = runner.argmax(1)
        xa = xc.flatten(1)
        domain = (xa < 1.0) if increase else (xa > 0.0)
        max_pairs = int(gamma * n) // 2
        pred = logits0.argmax(1)
        active = (pred != target) if targeted else (pred == y)
        for it in range(max_pairs + 1):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            g_t, g_o, logits = _grads(net, xa[idx].view(-1, *x.shape[1:]), target[idx])
            pred = logits.argmax(1)
            done = (pred == target[idx]) if targeted else (pred != y[idx])
            active[idx[done]] = False
            if it == max_pairs:
                break
            keep = ~done & (domain[idx].sum(1) >= 2)
            active[idx[~keep]] = False
            idx, g_t, g_o = idx[keep], g_t[keep], g_o[keep]
            if idx.numel() == 0:
                break
            p, q, found = _best_pairs(g_t, g_o, domain[idx], increase)
            active[idx[~found]] = False  # no admissible pair left: the search fails there
            idx, p, q = idx[found], p[found], q[found]
            for f in (p, q):
                xa[idx, f] = (xa[idx, f] + theta).clamp(0.0, 1.0)
                domain[idx, f] = False
    return to_input_dtype(xa.view_as(x), x)
