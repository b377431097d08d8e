"""Algorithm 2 of the two-stream paper (paper 003): blacklisting clients that keep sending images
the detector rejects, and the simulation behind its Fig. 5."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["BlacklistResult", "blacklist_curves", "blacklist_step", "plot_blacklist", "simulate_blacklist"]


def blacklist_step(cc: torch.Tensor, blacklisted: torch.Tensor, fake: torch.Tensor, *, cc_max: int = 15,
                   threshold: int = 3, release: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image from each client through Algorithm 2, vectorised over clients.

    Per client (``IP``) with confidence counter ``CC`` and blacklist flag:

    1. ``CC += 1`` if the image was rejected (``Img^RoF = 0``, ``fake``), else ``CC -= 1``;
       ``CC`` is clamped to ``[0, cc_max]`` (the paper: ``CC[IP] in [0, 15]``).
    2. A blacklisted client is removed from the blacklist when ``CC == release`` (0) and then
       answered with the detector's label; otherwise it gets no answer.
    3. A client not on the blacklist is added when ``CC >= threshold`` (3) and gets no answer;
       otherwise it is answered.

    The printed pseudo-code is garbled in two places, read as follows: "``CC[IP] <- Y_n``" on
    blacklisting is taken to be the answer being withheld (the counter is not overwritten with a
    label); the missing ``else Cls_n <- Y_n`` branches are the answers of steps 2-3. Blacklisted
    clients keep sending (and being scored), which is how the counter can return to 0.

    Args:
        cc: ``(N,)`` int counters. blacklisted: ``(N,)`` bool. fake: ``(N,)`` bool, True = rejected.

    Returns:
        ``(cc, blacklisted, answered)``, new tensors.
    """
    cc = (cc + torch.where(fake, 1, -1)).clamp(0, cc_max)
    release_now = blacklisted & (cc <= release)
    add_now = ~blacklisted & (cc >= threshold)
    new_bl = (blacklisted & ~release_now) | add_now
    answered = ~new_bl
    return cc, new_bl, answered


@dataclass
class BlacklistResult:
    """Fig. 5 data: fraction of each client type blacklisted after each image sent.

    Attributes:
        images_sent: ``(R,)`` 1..R. normal: ``(R,)`` fraction of normal clients blacklisted.
        adversarial: ``(R,)`` fraction of adversarial clients blacklisted.
        normal_ever: number of normal clients blacklisted at least once. config: the settings.
    """

    images_sent: np.ndarray
    normal: np.ndarray
    adversarial: np.ndarray
    normal_ever: int
    adversarial_answered_wrong: int
    config: dict[str, Any]


def simulate_blacklist(normal_reject: torch.Tensor, adversarial_reject: torch.Tensor, *, n_clients: int = 10_000,
                       n_adversarial: int = 1_000, rounds: int = 20, cc_max: int = 15, threshold: int = 3,
                       release: int = 0, seed: int = 0, adversarial_correct: torch.Tensor | None = None) -> BlacklistResult:
    """Algorithm 2 on a simulated network (Fig. 5), vectorised over clients.

    Every round each client sends one image: a normal client one drawn at random (with
    replacement, seeded) from the clean images, an adversarial client one from the adversarial
    images; the image's detection outcome is its precomputed Algorithm 1 verdict.

    Args:
        normal_reject: ``(M,)`` bool, Algorithm 1 rejected clean image m.
        adversarial_reject: ``(M',)`` bool for the adversarial images.
        n_clients: all clients (paper 10,000). n_adversarial: adversarial ones (paper 1,000).
        rounds: images sent per client. cc_max, threshold, release: Algorithm 2's constants (15, 3, 0).
        seed: seed of the draws.
        adversarial_correct: optional ``(M',)`` bool, the accepted adversarial image got the true
            label; counts answers that were wrong (``adversarial_answered_wrong``).
    """
    if not 0 <= n_adversarial <= n_clients:
        raise ValueError(f"n_adversarial must be in [0, n_clients]; got {n_adversarial} of {n_clients}")
    if len(normal_reject) == 0 or len(adversarial_reject) == 0:
        raise ValueError("normal_reject and adversarial_reject need at least one image each")
    if not 0 <= release < threshold <= cc_max:
        raise ValueError(f"need 0 <= release < threshold <= cc_max; got {release}, {threshold}, {cc_max}")
    gen = torch.Generator().manual_seed(seed)
    nr = torch.as_tensor(normal_reject, dtype=torch.bool).cpu()
    ar = torch.as_tensor(adversarial_reject, dtype=torch.bool).cpu()
    n_norm = n_clients - n_adversarial
    cc = torch.zeros(n_clients, dtype=torch.long)
    bl = torch.zeros(n_clients, dtype=torch.bool)
    ever = torch.zeros(n_clients, dtype=torch.bool)
    frac_n, frac_a = [], []
    wrong = 0
    for _ in range(rounds):
        i_n = torch.randint(len(nr), (n_norm,), generator=gen)
        i_a = torch.randint(len(ar), (n_adversarial,), generator=gen)
        fake = torch.cat([nr[i_n], ar[i_a]])
        cc, bl, answered = blacklist_step(cc, bl, fake, cc_max=cc_max, threshold=threshold, release=release)
        ever |= bl
        if adversarial_correct is not None:
            ok = torch.as_tensor(adversarial_correct, dtype=torch.bool).cpu()[i_a]
            wrong += int((answered[n_norm:] & ~ar[i_a] & ~ok).sum())
        frac_n.append(float(bl[:n_norm].float().mean()) if n_norm else 0.0)
        frac_a.append(float(bl[n_norm:].float().mean()) if n_adversarial else 0.0)
    cfg = {"n_clients": n_clients, "n_adversarial": n_adversarial, "rounds": rounds, "cc_max": cc_max,
           "threshold": threshold, "release": release, "seed": seed,
           "normal_reject_rate": float(nr.float().mean()), "adversarial_reject_rate": float(ar.float().mean())}
    return BlacklistResult(images_sent=np.arange(1, rounds + 1), normal=np.array(frac_n), adversarial=np.array(frac_a),
                           normal_ever=int(ever[:n_norm].sum()), adversarial_answered_wrong=wrong, config=cfg)


def blacklist_curves(normal_reject: torch.Tensor, adversarial_reject: Mapping[str, torch.Tensor],
                     **kwargs: Any) -> dict[str, BlacklistResult]:
    """One :func:`simulate_blacklist` per attack (Fig. 5's polylines): ``{attack: result}``."""
    return {name: simulate_blacklist(normal_reject, rej, **kwargs) for name, rej in adversarial_reject.items()}


def plot_blacklist(curves: BlacklistResult | Mapping[str, BlacklistResult], ax: Any = None) -> Any:
    """Fig. 5: fraction of clients blacklisted against images sent; returns the figure.

    Args:
        curves: one result or ``{attack: result}``; the normal clients' curve is drawn once
            (from the first result).
        ax: optional matplotlib axes.
    """
    if isinstance(curves, BlacklistResult):
        curves = {"adversarial": curves}
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    first = None
    for name, res in curves.items():
        first = first or res
        ax.plot(res.images_sent, res.adversarial, marker=".", label=f"{name} clients")
    if first is not None:
        ax.plot(first.images_sent, first.normal, color="k", linestyle="--", label="normal clients")
    ax.set_xlabel("images sent per client")
    ax.set_ylabel("fraction blacklisted")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Algorithm 2: blacklisting (Fig. 5)")
    return fig
