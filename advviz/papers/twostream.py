"""Reproduction of the two-stream detector paper (paper 003) on CIFAR-10 with the offline default pair.

``advviz reproduce twostream [--table T] [--quick] [--n N]`` with T one of

* ``1``: Table 1 — H-Net top-5 and L-Net top-1 accuracy on clean images and under each type I
  attack (on the high stream: FGSM, I-FGSM, MI-FGSM, DeepFool, universal) and type II attack
  (on the low stream: FGSM, I-FGSM, one-pixel, three-pixel, C&W);
* ``2``: Table 2 — Algorithm 1's reject / right / wrong fractions for the same images;
* ``fig5``: Algorithm 2's blacklist simulation fed with the per-image verdicts of Table 2;
* ``all`` (default): all three from one set of attacks (rows carry ``table``).

Attacks of *type III* (advviz's adaptive attack, beside the paper's types I and II; no paper
value): :func:`advviz.defenses.twostream.attack_type_iii` differentiates through both streams and
aims at a wrong label both accept (``joint_pgd``, the type II BIM's budget and steps).

Every result also carries ``"tradeoff"`` (issue 15, point 17): :func:`sweep` of Algorithm 1's
settings (``k_high``, ``k_low``, ``p1``, ``p2``) over the same images' stream probabilities, each
row with the clean reject / accepted-wrong rates and each attack's accepted-wrong rate, and
whether it meets :data:`TARGET`. :func:`tradeoff` measures the same on a fresh draw of images
with the type II FGSM and BIM only.

The pair: ``highres_resnet8_cifar10`` (advviz-trained, 64x64 = 2x bilinear upsampling; the
paper: Inception-v3 at 299x299 on ImageNet) and ``resnet32_cifar10`` (32x32, the paper's low
stream). Images: a seeded random draw from the CIFAR-10 test split (JPEG re-encoding), not
filtered for correctness (the paper's clean CIFAR-10 L-Net accuracy, 91.4%, is of all images).
Labels are the true CIFAR-10 labels; the attacks are untargeted against them. The universal
perturbation is fitted on as many CIFAR-10 *train* images (disjoint from the evaluated ones) and
then added to the evaluated images (``config["universal_fit"]``).

Paper values: Table 1's CIFAR-10 column has L-Net numbers only (H-Net "N/A"), shown as
``paper_l_net``; its ImageNet H-Net column as ``paper_imagenet_h_net``. Table 2 has no CIFAR-10
column: its ImageNet column is shown as ``paper_imagenet_reject/right/wrong`` for orientation.
The paper gives no attack budgets; the ones used are in ``config["attacks"]``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from advviz import data
from advviz.defenses import twostream as ts
from advviz.defenses.twostream import compare
from advviz.papers import twostream_attacks as A
from advviz.papers import twostream_blacklist as B
from advviz.papers._common import format_rows, result, timer, tracked
from advviz.papers.twostream_attacks import (
    TYPE_I,
    TYPE_II,
    TYPE_III,
    attack_type_i,
    attack_type_ii,
    attack_type_iii,
    fig4_attack,
)
from advviz.papers.twostream_blacklist import (
    BlacklistResult,
    blacklist_curves,
    blacklist_step,
    plot_blacklist,
    simulate_blacklist,
)
from advviz.train import default_device

__all__ = ["TYPE_I", "TYPE_II", "TYPE_III", "attack_type_i", "attack_type_ii", "attack_type_iii", "fig4_attack",
           "BlacklistResult", "blacklist_curves", "blacklist_step", "plot_blacklist", "simulate_blacklist", "GRID", "PAPER_TABLE1", "PAPER_TABLE2", "TABLES", "TARGET", "attack_configs", "format", "run", "sweep",
           "tradeoff", "best_settings"]

log = logging.getLogger(__name__)

TABLES = ("all", "1", "2", "fig5")
DATA = "CIFAR-10 test split, JPEG re-encoding ($ADVVIZ_DATA/cifar10-jpg), seeded random draw"

# Table 1: (type, attack) -> (CIFAR-10 L-Net, ImageNet H-Net)
PAPER_TABLE1 = {
    ("none", "none"): (0.914, 0.967),
    ("I", "fgsm"): (0.888, 0.277), ("I", "bim"): (0.889, 0.0), ("I", "mifgsm"): (0.888, 0.0),
    ("I", "deepfool"): (0.887, 0.676), ("I", "universal"): (0.886, 0.260),
    ("II", "fgsm"): (0.402, 0.966), ("II", "bim"): (0.114, 0.965), ("II", "one_pixel"): (0.365, 0.964),
    ("II", "three_pixel"): (0.135, 0.964), ("II", "cw_l2"): (0.0, 0.964),
}
# Table 2, ImageNet column: (reject, right, wrong)
PAPER_TABLE2 = {
    ("none", "none"): (0.133, 0.866, 0.001),
    ("I", "fgsm"): (0.836, 0.155, 0.009), ("I", "bim"): (0.985, 0.0, 0.015), ("I", "mifgsm"): (0.985, 0.0, 0.015),
    ("I", "deepfool"): (0.464, 0.532, 0.004), ("I", "universal"): (0.837, 0.153, 0.010),
    ("II", "fgsm"): (0.614, 0.382, 0.004), ("II", "bim"): (0.881, 0.113, 0.006),
    ("II", "one_pixel"): (0.655, 0.341, 0.004), ("II", "three_pixel"): (0.856, 0.139, 0.005),
    ("II", "cw_l2"): (0.989, 0.004, 0.007),
}
FIG5_POINTS = (1, 3, 5, 10, 20)

# Issue 15, point 17: what a useful detector would reach on CIFAR-10 (the paper's ImageNet figures are
# 0.1% clean accepted-wrong at 13.3% reject, 0.4-0.6% type II accepted-wrong)
TARGET = {"clean_wrong_max": 0.05, "clean_reject_max": 0.30, "type_ii_wrong_max": 0.10}
# Algorithm 1's settings swept by the trade-off (the paper's: k_high 5, k_low 2, p1 0.10, p2 0.20)
GRID = {"k_high": (1, 2, 3, 4, 5), "k_low": (1, 2), "p1": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
        "p2": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)}


def attack_configs(quick: bool) -> dict[str, dict[str, dict[str, Any]]]:
    """Attack settings per type (the paper gives none; common defaults, shortened with ``quick``)."""
    return {
        "I": {
            "fgsm": {"eps": 8 / 255},
            "bim": {"eps": 8 / 255, "alpha": 1 / 255, "steps": 10},
            "mifgsm": {"eps": 8 / 255, "alpha": 2 / 255, "steps": 10, "decay": 1.0},
            "deepfool": {"steps": 20 if quick else 50, "overshoot": 0.02, "nb_candidate": 10},
            "universal": {"eps": 10 / 255, "max_passes": 1 if quick else 5, "df_steps": 5 if quick else 10,
                          "candidates": 10},
        },
        "II": {
            "fgsm": {"eps": 8 / 255},
            "bim": {"eps": 8 / 255, "alpha": 1 / 255, "steps": 10},
            "one_pixel": {"pixels": 1, "population": 40 if quick else 400, "max_iter": 10 if quick else 100},
            "three_pixel": {"population": 40 if quick else 400, "max_iter": 10 if quick else 100},
            "cw_l2": {"c": 1.0, "kappa": 0.0, "steps": 30 if quick else 100, "binary_steps": 2 if quick else 5,
                      "lr": 0.01},
        },
        # advviz's adaptive attack on both streams and the agreement rule (the type II BIM's budget)
        "III": {"joint_pgd": {"eps": 8 / 255, "alpha": 1 / 255, "steps": 10}},
    }


def _verdicts(det: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: H-Net top-5 hit, L-Net top-1 hit, Algorithm 1's reject and right flags."""
    p_high, p_low = det.probabilities(x)

    mapping = det.mapping.to(p_high.device)
    top5 = mapping[p_high.topk(5, dim=1).indices]
    h_hit = (top5 == y[:, None]).any(1)
    l_hit = p_low.argmax(1) == y
    res = compare(p_high, p_low, mapping, p1=det.p1, p2=det.p2, k_high=det.k_high, k_low=det.k_low)
    return {"h_hit": h_hit.cpu(), "l_hit": l_hit.cpu(), "reject": res.reject.cpu(),
            "right": (~res.reject & (res.labels == y)).cpu(), "p_high": p_high.cpu(), "p_low": p_low.cpu(), "y": y.cpu()}


def _compute(*, n: int, quick: bool, seed: int, device: torch.device, attacks: tuple[str, ...] | None,
             p1: float, p2: float) -> tuple[list[dict[str, Any]], dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    det = ts.default_pair(p1=p1, p2=p2, device=device)
    x, y = data.sample(data.load("cifar10", "test"), n, seed=seed)
    x, y = x.to(device), y.to(device)
    # the universal perturbation is fitted on other images than those it is evaluated on (as
    # Moosavi-Dezfooli et al. fit on training images): the same number drawn from the train split
    n_fit = n
    x_fit, y_fit = data.sample(data.load("cifar10", "train"), n_fit, seed=seed)
    x_fit, y_fit = x_fit.to(device), y_fit.to(device)
    cfgs = attack_configs(quick)
    runs: list[tuple[str, str, Any]] = [("none", "none", None)]
    for kind, names in (("I", A.TYPE_I), ("II", A.TYPE_II), ("III", A.TYPE_III)):
        runs += [(kind, a, cfgs[kind][a]) for a in names if attacks is None or a in attacks]
    out: list[dict[str, Any]] = []
    verdicts: dict[str, dict[str, torch.Tensor]] = {}
    for kind, name, cfg in runs:
        with timer() as t:
            if kind == "none":
                xa = x
            elif kind == "I":
                fit = (x_fit, y_fit) if name == "universal" else None
                xa = A.attack_type_i(det, name, x, y, seed=seed, fit=fit, **cfg)
            elif kind == "II":
                xa = A.attack_type_ii(det, name, x, y, seed=seed, **cfg)
            else:
                xa = A.attack_type_iii(det, x, y, seed=seed, **cfg)
        v = _verdicts(det, xa, y)
        verdicts[f"{kind}:{name}"] = v
        out.append({"type": kind, "attack": name, "v": v, "seconds": t["seconds"]})
        log.info("%s %s: %.1f s", kind, name, t["seconds"])
    config = {"n": n, "seed": seed, "quick": quick, "p1": p1, "p2": p2, "k_high": det.k_high, "k_low": det.k_low,
              "high": "highres_resnet8_cifar10 (64x64, 2x bilinear upsampling)", "low": "resnet32_cifar10 (32x32)",
              "mapping": "identity (both streams predict CIFAR-10)",
              "universal_fit": (f"{n_fit} CIFAR-10 *train* images (data.sample, seed {seed}), disjoint from the "
                                f"{n} evaluated test images; true labels"),
              "attacks": {k: {a: c for a, c in v.items() if attacks is None or a in attacks} for k, v in cfgs.items()},
              "device": str(device)}
    return out, verdicts, config


@tracked
def run(*, table: str | None = None, quick: bool = False, n: int | None = None, seed: int = 0,
        device: str | torch.device | None = None, attacks: tuple[str, ...] | None = None,
        p1: float = 0.10, p2: float = 0.20, fig5_clients: int = 10_000, fig5_adversarial: int = 1_000,
        fig5_rounds: int = 20) -> dict[str, Any]:
    """Run Table 1 / Table 2 / Fig. 5 and return the JSON-ready result.

    Args:
        table: one of :data:`TABLES` (default ``"all"``).
        quick: short attack searches and ``n = 16`` (about 1-2 minutes on a 2-core CPU).
        n: number of test images (default 16 quick / 500 full).
        seed: image draw, attack and simulation seed.
        device: default CUDA when available.
        attacks: restrict to these attack names (all types), e.g. ``("fgsm",)``; ``"joint_pgd"``
            is type III.
        p1, p2: Algorithm 1's thresholds (paper 0.10, 0.20).
        fig5_clients, fig5_adversarial, fig5_rounds: Algorithm 2's simulation (paper 10,000 / 1,000).

    Returns:
        The result dict (``rows`` as the paper's tables) with ``"tradeoff"``: :func:`sweep` over
        :data:`GRID` on the same images (``{"grid", "target", "attacks", "rows", "met"}``).
    """
    table = table or "all"
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r} for the two-stream paper; choose one of {', '.join(TABLES)}")
    dev = torch.device(device) if device is not None else default_device()
    n = n or (16 if quick else 500)
    runs, verdicts, config = _compute(n=n, quick=quick, seed=seed, device=dev, attacks=attacks, p1=p1, p2=p2)
    rows: list[dict[str, Any]] = []
    if table in ("all", "1"):
        for r in runs:
            v = r["v"]
            row = {"table": "1", "type": r["type"], "attack": r["attack"],
                   "h_net": float(v["h_hit"].float().mean()), "l_net": float(v["l_hit"].float().mean())}
            paper = PAPER_TABLE1.get((r["type"], r["attack"]))
            if paper is not None:
                row["paper_l_net"], row["paper_imagenet_h_net"] = paper
            row["seconds"] = r["seconds"]
            rows.append(row)
    if table in ("all", "2"):
        for r in runs:
            v = r["v"]
            rej = float(v["reject"].float().mean())
            right = float(v["right"].float().mean())
            row = {"table": "2", "type": r["type"], "attack": r["attack"], "reject": rej, "right": right,
                   "wrong": max(0.0, 1.0 - rej - right)}
            paper = PAPER_TABLE2.get((r["type"], r["attack"]))
            if paper is not None:
                row.update(dict(zip(("paper_imagenet_reject", "paper_imagenet_right", "paper_imagenet_wrong"), paper)))
            rows.append(row)
    if table in ("all", "fig5"):
        normal = verdicts["none:none"]["reject"]
        for r in runs[1:]:
            res = B.simulate_blacklist(normal, r["v"]["reject"], n_clients=fig5_clients,
                                        n_adversarial=fig5_adversarial, rounds=fig5_rounds, seed=seed,
                                        adversarial_correct=r["v"]["right"])
            row = {"table": "fig5", "type": r["type"], "attack": r["attack"]}
            for k in FIG5_POINTS:
                if k <= fig5_rounds:
                    row[f"adversarial_after_{k}"] = float(res.adversarial[k - 1])
            row["normal_after_last"] = float(res.normal[-1])
            row["normal_ever"] = res.normal_ever
            rows.append(row)
        config["fig5"] = {"n_clients": fig5_clients, "n_adversarial": fig5_adversarial, "rounds": fig5_rounds,
                          "cc_max": 15, "threshold": 3, "release": 0,
                          "pools": "per-image Algorithm 1 verdicts of the Table 2 images (clean for normal clients)"}
    res = result("twostream", table, config, DATA, rows)
    probs = {f"{r['type']}:{r['attack']}": (r["v"]["p_high"], r["v"]["p_low"]) for r in runs}
    res["tradeoff"] = sweep(runs[0]["v"]["y"], probs, mapping=ts.identity_mapping(10))
    return res


def sweep(y: torch.Tensor, probs: dict[str, tuple[torch.Tensor, torch.Tensor]], *, mapping: torch.Tensor,
          grid: dict[str, tuple[float, ...]] | None = None, target: dict[str, float] | None = None) -> dict[str, Any]:
    """Algorithm 1 over a grid of its settings, on stream probabilities computed once.

    Args:
        y: ``(B,)`` true common labels.
        probs: ``{"none:none": (p_high, p_low), "<type>:<attack>": ..., ...}``: each set's
            ``(B, K_high)`` and ``(B, K_low)`` softmax probabilities (``"none:none"``, the clean
            images, is required).
        mapping: ``(K_high,)`` common label per high class.
        grid: ``{"k_high", "k_low", "p1", "p2"}`` value lists (default :data:`GRID`).
        target: :data:`TARGET`'s keys (default :data:`TARGET`).

    Returns:
        ``{"grid", "target", "attacks", "rows", "met"}``: one row per setting with
        ``k_high, k_low, p1, p2``, ``clean_reject``, ``clean_wrong`` (accepted with a wrong label),
        ``<type>:<attack>_wrong`` and ``_reject`` per attacked set, ``type_ii_wrong`` (the largest
        over the type II sets) and ``meets_target``; ``met`` lists the rows that meet it.
    """
    grid = dict(GRID if grid is None else grid)
    target = dict(TARGET if target is None else target)
    if "none:none" not in probs:
        raise ValueError("sweep needs the clean images' probabilities under 'none:none'")
    y = y.cpu()
    rows: list[dict[str, Any]] = []
    for k_high in grid["k_high"]:
        for k_low in grid["k_low"]:
            for p1 in grid["p1"]:
                for p2 in grid["p2"]:
                    row: dict[str, Any] = {"k_high": k_high, "k_low": k_low, "p1": p1, "p2": p2}
                    for name, (ph, pl) in probs.items():
                        r = compare(ph, pl, mapping, p1=p1, p2=p2, k_high=k_high, k_low=k_low)
                        key = "clean" if name == "none:none" else name
                        row[f"{key}_reject"] = float(r.reject.float().mean())
                        row[f"{key}_wrong"] = float((~r.reject & (r.labels != y)).float().mean())
                    ii = [v for k, v in row.items() if k.startswith("II:") and k.endswith("_wrong")]
                    row["type_ii_wrong"] = max(ii) if ii else None
                    row["meets_target"] = (row["clean_wrong"] <= target["clean_wrong_max"]
                                           and row["clean_reject"] <= target["clean_reject_max"]
                                           and (row["type_ii_wrong"] is None
                                                or row["type_ii_wrong"] <= target["type_ii_wrong_max"]))
                    rows.append(row)
    return {"grid": {k: list(v) for k, v in grid.items()}, "target": target,
            "attacks": [k for k in probs if k != "none:none"], "rows": rows,
            "met": [r for r in rows if r["meets_target"]]}


def tradeoff(*, n: int = 256, seed: int = 0, device: str | torch.device | None = None,
             grid: dict[str, tuple[float, ...]] | None = None) -> dict[str, Any]:
    """Issue 15, point 17: the detector's trade-off over its settings, with the shipped default pair.

    On ``n`` CIFAR-10 test images (seeded draw, not filtered) the clean images and their type II
    FGSM and BIM images (:func:`attack_configs`, the same budgets as Table 2) go through both
    streams once; :func:`sweep` then applies Algorithm 1 for every setting of ``grid``.

    Returns:
        :func:`sweep`'s dict plus ``"config"`` (``n``, ``seed``, the streams, the attacks).
    """
    dev = torch.device(device) if device is not None else default_device()
    det = ts.default_pair(device=dev)
    x, y = data.sample(data.load("cifar10", "test"), n, seed=seed)
    x, y = x.to(dev), y.to(dev)
    cfgs = attack_configs(quick=True)["II"]
    sets = {"none:none": x}
    for name in ("fgsm", "bim"):
        sets[f"II:{name}"] = A.attack_type_ii(det, name, x, y, seed=seed, **cfgs[name])
    probs = {k: tuple(p.cpu() for p in det.probabilities(v)) for k, v in sets.items()}
    out = sweep(y, probs, mapping=ts.identity_mapping(10), grid=grid)
    out["config"] = {"n": n, "seed": seed, "data": DATA, "high": "highres_resnet8_cifar10 (64x64)",
                     "low": "resnet32_cifar10 (32x32)", "attacks": {"II": {k: cfgs[k] for k in ("fgsm", "bim")}}}
    return out


def best_settings(trade: dict[str, Any]) -> list[dict[str, Any]]:
    """The Pareto front of a :func:`sweep` result: the rows no other row beats on all of clean
    reject, clean accepted-wrong and type II accepted-wrong (sorted by clean reject)."""
    keys = ("clean_reject", "clean_wrong", "type_ii_wrong")
    rows = [r for r in trade["rows"] if r.get("type_ii_wrong") is not None]
    front = [r for r in rows if not any(all(o[k] <= r[k] for k in keys) and any(o[k] < r[k] for k in keys)
                                        for o in rows)]
    return sorted(front, key=lambda r: (r["clean_reject"], r["clean_wrong"]))


def format(res: dict[str, Any]) -> str:
    """The result as text tables (one per paper table), paper values beside measured ones."""
    parts = []
    titles = {"1": "Two-stream paper, Table 1: H-Net top-5 / L-Net top-1 accuracy (CIFAR-10, measured vs paper)",
              "2": "Two-stream paper, Table 2: reject / right / wrong (CIFAR-10 measured; paper: ImageNet column)",
              "fig5": "Two-stream paper, Fig. 5: fraction of clients blacklisted after k images (Algorithm 2)"}
    for t in ("1", "2", "fig5"):
        rows = [{k: v for k, v in r.items() if k != "table"} for r in res["rows"] if r["table"] == t]
        if rows:
            parts.append(format_rows({**res, "rows": rows}, title=titles[t]))
    trade = res.get("tradeoff")
    if trade and trade["rows"]:
        cfg_k = (res["config"]["k_high"], res["config"]["k_low"], res["config"]["p1"], res["config"]["p2"])
        paper_row = next((r for r in trade["rows"] if (r["k_high"], r["k_low"], r["p1"], r["p2"]) == cfg_k), None)
        t = trade["target"]
        lines = [f"Trade-off over k_high x k_low x p1 x p2 ({len(trade['rows'])} settings; JSON key 'tradeoff'): "
                 f"target clean wrong <= {t['clean_wrong_max']:.2f}, clean reject <= {t['clean_reject_max']:.2f}, "
                 f"type II wrong <= {t['type_ii_wrong_max']:.2f}: met by {len(trade['met'])} setting(s)"]
        if paper_row is not None:
            lines.append(f"  setting {cfg_k}: clean reject {paper_row['clean_reject']:.3f}, clean wrong "
                         f"{paper_row['clean_wrong']:.3f}" + ("" if paper_row["type_ii_wrong"] is None else
                                                              f", type II wrong {paper_row['type_ii_wrong']:.3f}"))
        ok = [r for r in trade["rows"] if r["clean_reject"] <= t["clean_reject_max"]]
        if ok:
            b = min(ok, key=lambda r: (r["clean_wrong"], r["type_ii_wrong"] or 0.0))
            lines.append(f"  lowest clean wrong with clean reject <= {t['clean_reject_max']:.2f}: "
                         f"k_high={b['k_high']} k_low={b['k_low']} p1={b['p1']} p2={b['p2']}: clean wrong "
                         f"{b['clean_wrong']:.3f}, reject {b['clean_reject']:.3f}"
                         + ("" if b["type_ii_wrong"] is None else f", type II wrong {b['type_ii_wrong']:.3f}"))
        parts.append("\n".join(lines))
    cfg = res["config"]
    parts.append(f"config: n={cfg['n']} seed={cfg['seed']} quick={cfg['quick']} p1={cfg['p1']} p2={cfg['p2']}; "
                 f"high={cfg['high']}; low={cfg['low']}")
    return "\n\n".join(parts)
