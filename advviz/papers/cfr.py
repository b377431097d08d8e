"""Reproduction of the CFR patch-attack paper's experiments (paper 002) on CIFAR-10.

``advviz reproduce cfr --table T`` with T one of:

* ``1``: Table I — ASR, SSIM, l0, l1, l2, linf of PGD (eps 16/255, alpha 2/255, 20 steps), C&W
  (c = 1, lr = 0.01, 1,000 iterations), JSMA (theta = 0.3), one-pixel (5 pixels) and CFR on
  ResNet-20 (the paper: ResNet-18).
* ``fig3``: accuracy on clean, Adv-CFR (CFR pixels set to 0) and Adv-non-CFR (all other pixels
  set to 0) images at tau = 0.2, per model.
* ``fig7``: transferability — accuracy of each target model on each substitute's adversarial
  examples, for PGD, M-DI2-FGSM, C&W and CFR (Fig. 7's settings).
* ``2``: Table II — ASR of PGD, C&W and CFR against Fast-AT and PGD-AT ResNet-20.
* ``fig9``: ASR against iterations N and inverse temperature T.
* ``fig10``: ASR and l0 against the threshold tau.

Images: CIFAR-10 test images correctly classified by every model involved (as the paper
does), drawn with a fixed seed. The CIFAR-10 here is the JPEG re-encoding (ResNet-20: 81.0%).
Models: the published ResNet-20/32 checkpoints; VGG-11/13/16 and the adversarially trained
ResNet-20s are advviz-trained weights found in ``$ADVVIZ_WEIGHTS`` or the cache (rows that
need missing weights say how to make them instead of inventing numbers).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch

from advviz import attacks, data, metrics, models
from advviz.attacks import cfr_attack
from advviz.explain import gradcam, occlude
from advviz.papers import protected
from advviz.papers._common import format_rows, result, timer, tracked
from advviz.train import default_device

__all__ = ["run", "format", "PAPER_TABLE1", "TABLES"]

log = logging.getLogger(__name__)

TABLES = ("1", "fig3", "fig7", "2", "fig9", "fig10")
DATA = "CIFAR-10 test split, JPEG re-encoding ($ADVVIZ_DATA/cifar10-jpg), images every model classifies correctly"

# Table I, CIFAR-10 rows (ResNet-18 in the paper); rates as fractions.
PAPER_TABLE1 = {
    "pgd": {"asr": 0.9318, "ssim": 0.94, "l0": 3060, "l1": 265.84, "l2": 5.57, "linf": 0.16},
    "cw_l2": {"asr": 0.9744, "ssim": 0.94, "l0": 2832, "l1": 797.97, "l2": 21.01, "linf": 0.94},
    "jsma": {"asr": 0.9033, "ssim": 0.71, "l0": 335, "l1": 856.11, "l2": 28.04, "linf": 1.00},
    "one_pixel": {"asr": 0.8077, "ssim": 0.99, "l0": 15, "l1": 24.89, "l2": 7.03, "linf": 1.00},
    "cfr": {"asr": 1.00, "ssim": 0.99, "l0": 2333, "l1": 77.03, "l2": 1.56, "linf": 0.07},
}
# Table II, CIFAR-10 rows (ResNet-18-Fast / ResNet-18-PGD in the paper).
PAPER_TABLE2 = {
    ("fast_at", "pgd"): 0.6366, ("fast_at", "cw_l2"): 0.7079, ("fast_at", "cfr"): 0.79,
    ("pgd_at", "pgd"): 0.5757, ("pgd_at", "cw_l2"): 0.6571, ("pgd_at", "cfr"): 0.7739,
}


def _attack_configs(quick: bool) -> dict[str, dict[str, Any]]:
    """The paper's settings (Table I / Fig. 7); ``quick`` shortens C&W's and one-pixel's searches."""
    return {
        "pgd": {"norm": "linf", "eps": 16 / 255, "alpha": 2 / 255, "steps": 20},
        "mdi2fgsm": {"eps": 16 / 255, "alpha": 2 / 255, "steps": 20, "p": 0.5},
        "cw_l2": {"c": 1.0, "lr": 0.01, "steps": 100 if quick else 1000, "binary_steps": 1},
        "jsma": {"theta": 0.3},
        "one_pixel": {"pixels": 5, "population": 100 if quick else 400, "max_iter": 20 if quick else 100},
        # the defaults of advviz.attacks.cfr, written out so every result records which variant ran
        "cfr": {"mode": "normalized", "tau": 0.2, "T": 0.1, "beta": 1.0, "steps": 20, "step": 0.05, "eta": 10.0,
                "early_stop": True},
    }


# How each CFR mode updates delta (advviz.attacks.cfr's module docstring), recorded with the rows.
CFR_STEP_RULES = {
    "normalized": "L2-normalised ascent steps of length `step` on J'_CE, proximal step for (beta/2)||delta*M^||^2, "
                  "mask rescaled to max 1, delta = 0 start",
    "sgd": "raw SGD steps of size eta on J'_CE - (beta/2)||delta*M^||^2, each capped at L2 length `step`",
    "paper": "Algorithm 1 as printed: minimise 1/J by SGD (eta), sum-normalised mask at every update, "
             "uniform [-1, 1] start",
}


def cfr_label(cfg: dict[str, Any]) -> str:
    """The row label of a CFR run: ``"cfr (normalized)"``, ``"cfr (sgd)"`` or ``"cfr (paper)"``."""
    return f"cfr ({cfg.get('mode', 'normalized')})"


def _recorded(cfgs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The attack settings for ``config``: CFR's with its mode's step rule (whether each image
    stops once misclassified is ``early_stop``; the literal mode always runs all steps)."""
    out = {k: dict(v) for k, v in cfgs.items()}
    if "cfr" in out:
        mode = out["cfr"].get("mode", "normalized")
        out["cfr"]["step_rule"] = CFR_STEP_RULES[mode]
        if mode == "paper":
            out["cfr"]["early_stop"] = False
    return out


def _load_model(name: str, device: torch.device) -> torch.nn.Module | None:
    try:
        return models.load(name, device=device)
    except models.CheckpointError as exc:
        log.warning("model %s unavailable: %s", name, exc)
        return None


def _models(names: list[str], device: torch.device) -> tuple[dict[str, torch.nn.Module], list[str]]:
    loaded, missing = {}, []
    for n in names:
        m = _load_model(n, device)
        if m is None:
            missing.append(n)
        else:
            loaded[n] = m
    return loaded, missing


def _sample(models: list[torch.nn.Module], n: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.sample(data.load("cifar10", "test"), n, seed=seed, model=models, device=device)
    return x.to(device), y.to(device)


def _attack(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: dict[str, Any],
            seed: int, batch: int = 128) -> torch.Tensor:
    spec = attacks.get(name)
    kw = dict(cfg)
    if "seed" in inspect.signature(spec.fn).parameters:
        kw.setdefault("seed", seed)
    out = [spec.fn(model, x[s:s + batch], y[s:s + batch], **kw) for s in range(0, x.shape[0], batch)]
    return torch.cat(out)


def table1(*, n: int, quick: bool, seed: int, device: torch.device) -> dict[str, Any]:
    """Table I on ResNet-20."""
    model = _load_model("resnet20_cifar10", device)
    if model is None:
        raise FileNotFoundError("Table I needs resnet20_cifar10: set ADVVIZ_WEIGHTS")
    x, y = _sample([model], n, seed, device)
    cfgs = _attack_configs(quick)
    rows = []
    for name in ("pgd", "cw_l2", "jsma", "one_pixel", "cfr"):
        with timer() as t:
            x_adv = _attack(name, model, x, y, cfgs[name], seed)
        norms = metrics.lp_norms(x, x_adv)
        row = {"attack": cfr_label(cfgs[name]) if name == "cfr" else name, "model": "resnet20",
               "asr": metrics.asr(model, x_adv, y),
               "ssim": float(metrics.ssim(x, x_adv)), **{k: float(v) for k, v in norms.items()},
               "seconds": t["seconds"]}
        row.update({f"paper_{k}": v for k, v in PAPER_TABLE1[name].items()})
        rows.append(row)
    config = {"n": n, "seed": seed, "attacks": _recorded(cfgs), "model": "resnet20_cifar10 (paper: ResNet-18)",
              "quick": quick}
    return result("cfr", "1", config, DATA, rows)


def fig3(*, n: int, quick: bool, seed: int, device: torch.device, tau: float = 0.2) -> dict[str, Any]:
    """Fig. 3: accuracy on clean, Adv-CFR and Adv-non-CFR images at ``tau``."""
    names = ["resnet20_cifar10", "resnet32_cifar10"] + ([] if quick else
                                                         ["vgg11_cifar10", "vgg13_cifar10", "vgg16_cifar10"])
    loaded, missing = _models(names, device)
    x, y = data.sample(data.load("cifar10", "test"), n, seed=seed)
    x, y = x.to(device), y.to(device)
    rows = []
    for name, model in loaded.items():
        cams = torch.cat([gradcam(model, x[s:s + 256], target=y[s:s + 256]) for s in range(0, n, 256)])
        rows.append({"model": name.removesuffix("_cifar10"),
                     "accuracy": metrics.accuracy(model, x, y),
                     "adv_cfr_accuracy": metrics.accuracy(model, occlude(x, cams, tau, keep="non_cfr"), y),
                     "adv_non_cfr_accuracy": metrics.accuracy(model, occlude(x, cams, tau, keep="cfr"), y),
                     "cfr_fraction": float((cams >= tau).float().mean())})
    config = {"n": n, "seed": seed, "tau": tau, "missing_models": missing,
              "note": "random test images (not filtered); Grad-CAM of the true class, each model its own map"}
    return result("cfr", "fig3", config, "CIFAR-10 test split, JPEG re-encoding, random images", rows)


def fig7(*, n: int, quick: bool, seed: int, device: torch.device) -> dict[str, Any]:
    """Fig. 7: accuracy of every target model on every substitute's adversarial examples.

    Rows ``pgd``, ``mdi2fgsm`` and ``cw_l2`` use the paper's settings. CFR is unbounded and by
    default stops each image once it is misclassified, so its perturbations are far smaller than
    PGD's 16/255 L-inf ones and a transfer comparison with them says little. Fig. 7's CFR-vs-PGD
    comparison is therefore run at a **matched L2 budget**: ``cfr (normalized)`` with
    ``early_stop=False`` (all N = 20 steps for every image), and ``pgd_l2 (matched)``, L2 PGD for
    its full 20 steps (alpha = 2.5 eps / 20, random start) with ``eps`` = the median per-image L2
    norm of that substitute's CFR perturbations. Every row carries ``l2``, the mean per-image
    L2 norm of its perturbations. (Choice: L2, CFR's own norm; the median, so that about half of
    the CFR images are above PGD's budget and half below.)
    """
    names = ["resnet20_cifar10", "resnet32_cifar10"] + ([] if quick else
                                                         ["vgg11_cifar10", "vgg13_cifar10", "vgg16_cifar10"])
    loaded, missing = _models(names, device)
    models_ = list(loaded.values())
    x, y = _sample(models_, n, seed, device)
    cfgs = _attack_configs(quick)
    cfgs["cfr"] = dict(cfgs["cfr"], early_stop=False)
    rows, matched = [], {}
    for sub_name, sub in loaded.items():
        advs = {}
        for attack in ("pgd", "mdi2fgsm", "cw_l2", "cfr"):
            advs[cfr_label(cfgs["cfr"]) if attack == "cfr" else attack] = _attack(attack, sub, x, y, cfgs[attack], seed)
        cfr_l2 = (advs[cfr_label(cfgs["cfr"])] - x).flatten(1).norm(dim=1)
        eps2 = float(cfr_l2.median())
        pgd_cfg = {"norm": "l2", "eps": eps2, "alpha": 2.5 * eps2 / 20, "steps": 20}
        matched[sub_name.removesuffix("_cifar10")] = pgd_cfg
        advs["pgd_l2 (matched)"] = _attack("pgd", sub, x, y, pgd_cfg, seed)
        for attack, x_adv in advs.items():
            l2 = float((x_adv - x).flatten(1).norm(dim=1).mean())
            for tgt_name, tgt in loaded.items():
                rows.append({"substitute": sub_name.removesuffix("_cifar10"), "attack": attack,
                             "model": tgt_name.removesuffix("_cifar10"), "accuracy": metrics.accuracy(tgt, x_adv, y),
                             "l2": l2, "white_box": sub_name == tgt_name})
    config = {"n": n, "seed": seed, "attacks": _recorded({k: cfgs[k] for k in ("pgd", "mdi2fgsm", "cw_l2", "cfr")}),
              "pgd_l2_matched": matched,
              "budget": ("CFR (full 20 steps, no early stop) against L2 PGD (full 20 steps) with eps = the median "
                         "per-image L2 norm of the same substitute's CFR perturbations; pgd / mdi2fgsm / cw_l2 at "
                         "the paper's settings"),
              "missing_models": missing}
    return result("cfr", "fig7", config, DATA, rows)


def _resnet20_with_cams(what: str, *, n: int, seed: int,
                        device: torch.device) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ResNet-20, ``n`` images it classifies correctly, and their Grad-CAM maps (true class)."""
    model = _load_model("resnet20_cifar10", device)
    if model is None:
        raise FileNotFoundError(f"{what} needs resnet20_cifar10: set ADVVIZ_WEIGHTS")
    x, y = _sample([model], n, seed, device)
    return model, x, y, gradcam(model, x, target=y)


def fig9(*, n: int, quick: bool, seed: int, device: torch.device) -> dict[str, Any]:
    """Fig. 9: ASR against iterations N and inverse temperature T (tau 0.2, beta 1)."""
    model, x, y, cam = _resnet20_with_cams("Fig. 9", n=n, seed=seed, device=device)
    rows = []
    steps_grid = (5, 10, 20, 30)
    t_grid = (0.01, 0.1, 1.0, 2.0) if not quick else (0.1, 2.0)
    for mode in ("normalized", "sgd"):
        for T in (t_grid if mode == "sgd" else (0.1,)):
            for steps in steps_grid:
                r = cfr_attack(model, x, y, cam=cam, steps=steps, T=T, mode=mode)
                rows.append({"attack": cfr_label({"mode": mode}), "mode": mode, "T": T, "steps": steps,
                             "early_stop": True, "asr": metrics.asr(model, r.x_adv, y)})
    config = {"n": n, "seed": seed, "tau": 0.2, "beta": 1.0, "eta": 10.0, "step": 0.05,
              "cfr": {m: {"mode": m, "step_rule": CFR_STEP_RULES[m], "early_stop": True, "step": 0.05, "eta": 10.0}
                      for m in ("normalized", "sgd")},
              "note": "T cancels under the default normalised step (documented); mode='sgd' shows its effect"}
    return result("cfr", "fig9", config, DATA, rows)


def fig10(*, n: int, quick: bool, seed: int, device: torch.device) -> dict[str, Any]:
    """Fig. 10: ASR and l0 against tau (N = 30, T = 0.1, beta = 1)."""
    model, x, y, cam = _resnet20_with_cams("Fig. 10", n=n, seed=seed, device=device)
    rows = []
    for tau in ((0.0, 0.2, 0.4, 0.6, 0.8) if quick else (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)):
        r = cfr_attack(model, x, y, cam=cam, tau=tau, steps=30)
        norms = metrics.lp_norms(x, r.x_adv)
        rows.append({"attack": cfr_label({"mode": "normalized"}), "tau": tau, "asr": metrics.asr(model, r.x_adv, y),
                     "l0": float(norms["l0"]), "l2": float(norms["l2"])})
    cfr_cfg = {"mode": "normalized", "step_rule": CFR_STEP_RULES["normalized"], "early_stop": True, "steps": 30,
               "T": 0.1, "beta": 1.0, "step": 0.05}
    return result("cfr", "fig10", {"n": n, "seed": seed, "steps": 30, "T": 0.1, "beta": 1.0, "cfr": cfr_cfg},
                  DATA, rows)


def table2(*, n: int, quick: bool, seed: int, device: torch.device) -> dict[str, Any]:
    """Table II: PGD, C&W and CFR against adversarially trained ResNet-20 (Fast-AT, PGD-AT)."""
    cfgs = _attack_configs(quick)
    rows, made = [], {}
    for kind in ("fast_at", "pgd_at"):
        model, how = protected.resnet20(kind, quick=quick, device=device)
        made[kind] = how
        x, y = _sample([model], n, seed, device)
        for attack in ("pgd", "cw_l2", "cfr"):
            x_adv = _attack(attack, model, x, y, cfgs[attack], seed)
            label = cfr_label(cfgs[attack]) if attack == "cfr" else attack
            rows.append({"model": f"resnet20_{kind}", "attack": label, "asr": metrics.asr(model, x_adv, y),
                         "paper_asr": PAPER_TABLE2[(kind, attack)]})
    config = {"n": n, "seed": seed, "attacks": _recorded({k: cfgs[k] for k in ("pgd", "cw_l2", "cfr")}),
              "protected_models": made}
    return result("cfr", "2", config, DATA, rows)


@tracked
def run(*, table: str | None = None, quick: bool = False, n: int | None = None, seed: int = 0,
        device: str | torch.device | None = None) -> dict[str, Any]:
    """Run one of the paper's experiments (default Table I) and return the JSON-ready result.

    Args:
        table: one of ``TABLES`` (default ``"1"``).
        quick: the small configuration (about a minute on a 2-core CPU for Table I).
        n: number of images (defaults: Table I 100 / quick 16; Fig. 3 1000 / 200; Fig. 7 100 / 16;
            Table II 100 / 16; Figs. 9-10 100 / 16).
        seed: image sampling and attack seed.
        device: default CUDA when available.
    """
    table = table or "1"
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r} for the CFR paper; choose one of {', '.join(TABLES)}")
    dev = torch.device(device) if device is not None else default_device()
    fn = {"1": table1, "fig3": fig3, "fig7": fig7, "2": table2, "fig9": fig9, "fig10": fig10}[table]
    default_n = {"fig3": (200, 1000)}.get(table, (16, 100))
    n = n or default_n[0 if quick else 1]
    return fn(n=n, quick=quick, seed=seed, device=dev)


def format(res: dict[str, Any]) -> str:  # noqa: A001 - the CLI contract names it format
    """The result as a text table, paper values beside measured ones."""
    titles = {"1": "CFR paper, Table I (CIFAR-10; measured on ResNet-20, paper on ResNet-18)",
              "fig3": "CFR paper, Fig. 3: accuracy on clean / Adv-CFR / Adv-non-CFR images",
              "fig7": "CFR paper, Fig. 7: transferability (accuracy of the target model)",
              "2": "CFR paper, Table II: ASR against adversarially trained ResNet-20",
              "fig9": "CFR paper, Fig. 9: ASR against iterations N and inverse temperature T",
              "fig10": "CFR paper, Fig. 10: ASR and l0 against the threshold tau"}
    text = format_rows(res, title=titles.get(res["table"]))
    missing = res["config"].get("missing_models")
    if missing:
        text += ("\nnot available (train them with `advviz train vggNN --data cifar10 ...` into $ADVVIZ_WEIGHTS): "
                 + ", ".join(missing))
    return text
