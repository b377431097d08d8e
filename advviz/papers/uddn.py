"""UDDN paper (paper 004), Tables 1-3 analogues on CIFAR-10 ResNet-20.

The paper defends FaceNet on LFW; advviz measures the same quantities on CIFAR-10 with the
published ResNet-20 (``resnet20_cifar10``) as the protected model:

* test sets: ``clean`` (``n`` random test images), ``white_box`` (half FGSM, half I-FGSM-4,
  eps 8/255, made on the undefended ResNet-20, as the paper's FGSM / FGSM4 on FaceNet),
  ``black_box`` (the same attacks made on the published ResNet-32, as the paper's made on
  Inception-V3);
* defenses: ``none`` (NA), ``dae`` and ``uddn`` (:mod:`advviz.defenses.uddn`), ``pgd`` (the
  paper's "PGD", its ref. [27]: Liao et al.'s *pixel-guided denoiser*, i.e. the UDDN network
  trained with the pixel-level L1 loss; ``load_denoiser("pgd")``), ``pgd_at`` (advviz's addition,
  no paper value: ResNet-20 PGD-7 adversarially fine-tuned, :mod:`advviz.papers.protected`),
  ``jpeg`` (quality 75, the paper's "data compression"), ``distillation`` (the paper's
  "Distillation [29]", Papernot et al.'s *defensive distillation*: teacher and student trained
  at temperature T = 100 on clean images, the student deployed at T = 1;
  :func:`advviz.defenses.distillation.load_defensive_student`), ``adv_distillation`` (advviz's
  earlier variant, no paper value: teacher fine-tuned on the training pairs' attacked images
  with one-hot labels, student on its outputs at T = 10, eq. 6; raw inputs),
  ``uddn_distillation`` (the paper's method: UDDN, then a student distilled from a teacher
  fine-tuned on UDDN-denoised images);
* ``accuracy`` (Tables 2-3) and ``l1``: mean absolute difference between what the classifier
  receives (the denoised image, or the input when there is no denoiser) and the clean image
  (Table 1).

**Threat models** (issues 16 and 25; Athalye et al., ICML 2018; Tramer et al., NeurIPS 2020).
Every row carries ``threat``. The paper's rows are ``"oblivious"``: the white-box set is made on
the undefended ResNet-20 whatever the defense. For each defense an ``"adaptive"`` ``white_box`` row
is added, computed by :func:`advviz.evaluate.adaptive_attack` on the deployed classifier:
``defended(classifier, purifier)`` (:func:`advviz.defenses.defended`) for the denoisers
(differentiable: gradients pass through them) and for JPEG (not differentiable: BPDA's identity
backward pass, Athalye et al. Sec. 4.1), the defense's own classifier for the defenses that change
the classifier (``pgd_at``, ``distillation``, ``adv_distillation``; ``uddn_distillation`` is UDDN
then its student). The suite is APGD-CE then APGD-T (100 iterations each, one restart, 9 target
classes, eps 8/255, seeded) end to end, each on the images still robust, then the oblivious white-box set as the
transfer attack on the images still robust. Randomness is probed
(:func:`advviz.evaluate.flags.randomized`), not assumed: no defense here is random, so
``eot_samples = 1``. An adaptive row's ``accuracy`` is the per-image worst case over the clean
image, the adaptive attacks and the transfer attack; ``end_to_end_accuracy`` is the adaptive
attacks alone; ``breakers`` counts what broke the images and ``per_sample`` names it per image (in
the order of the sampled images); ``l1`` is measured on the input that decided each image (the
breaking attack's, the clean image where none broke it); ``flags`` holds
:func:`advviz.evaluate.flags.transfer_flag` when the transfer attack broke images the adaptive ones
did not. APGD-T's targeted DLR loss matters for defensive distillation: its student deployed at T = 1 saturates
the softmax, the cross-entropy gradient through it vanishes (Carlini & Wagner 2016, "Defensive
Distillation is Not Robust to Adversarial Examples"), and the old end-to-end attack (FGSM and
I-FGSM-4 on the cross-entropy) left .820 where the transfer attack from the undefended ResNet-20
left .039 (``--quick``, 128 images); the DLR loss is invariant to the logits' scale and attacks it
end to end: the suite leaves .000 (APGD-CE broke 7 of the 109 images the student classifies
correctly, APGD-T the other 102; measured with ``--quick``). ``none`` has no adaptive row: its white-box set is already made on the model it is
scored on. Adaptive rows carry no paper value (the paper reports only the oblivious setting).
``config["adaptive"]`` records this.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from advviz import attacks, data, metrics, models
from advviz.defenses import distillation as dist
from advviz.defenses.jpeg import jpeg
from advviz.defenses.pix2pix import purify
from advviz.defenses.uddn import load_denoiser, training_pairs
from advviz.evaluate import ADAPTIVE_ATTACKS, adaptive_attack, format_breakers
from advviz.papers import protected
from advviz.papers._common import format_rows, result, timer, tracked

__all__ = ["ADAPTIVE", "DISTILL", "TABLES", "format", "run"]

TABLES = ("1-3",)

DISTILL = {"T": 10.0, "lam": 1.0, "epochs": 1, "lr": 0.01, "optimizer": "sgd", "batch_size": 64}

ADAPTIVE = {
    "what": "advviz.evaluate.adaptive_attack on the deployed classifier: the attacks below end to end, each on the "
            "images still robust, then the oblivious white-box set (half FGSM, half I-FGSM-4, eps 8/255, made on the "
            "undefended ResNet-20) as the transfer attack (Athalye et al. 2018; Tramer et al. 2020; Croce & Hein 2020)",
    "attacks": [{"attack": a, **p} for a, p in ADAPTIVE_ATTACKS],
    "bpda": "where the purifier gives no gradient: jpeg (registered as non-differentiable: identity backward pass); "
            "the denoisers are differentiated as they are",
    "eot": "when advviz.evaluate.flags.randomized finds the defense random (probed on the images); none is here",
    "accuracy": "per image, the worst case over the clean image, the adaptive attacks and the transfer attack; "
                "end_to_end_accuracy: the adaptive attacks alone (APGD-T's loss is invariant to the logits' scale, so "
                "defensive distillation's saturated softmax does not stop it: Carlini & Wagner 2016)",
    "none": "no adaptive row: its white-box set is already made on the model it is scored on",
}

PAPER = {  # LFW / FaceNet: (accuracy, L1); Tables 1-2 for the denoisers, Table 3 for the other defenses
    ("none", "clean"): (0.845, 0.0), ("none", "white_box"): (0.223, 0.0373), ("none", "black_box"): (0.690, 0.0157),
    ("dae", "clean"): (0.661, 0.0153), ("dae", "white_box"): (0.288, 0.0359), ("dae", "black_box"): (0.627, 0.0161),
    ("pgd", "clean"): (0.819, 0.0138), ("pgd", "white_box"): (0.582, 0.0178), ("pgd", "black_box"): (0.722, 0.0145),
    ("jpeg", "clean"): (0.822, None), ("jpeg", "white_box"): (0.534, None), ("jpeg", "black_box"): (0.558, None),
    ("distillation", "clean"): (0.836, None), ("distillation", "white_box"): (0.563, None),
    ("distillation", "black_box"): (0.708, None),
    ("uddn", "clean"): (0.831, 0.0125), ("uddn", "white_box"): (0.602, 0.0167), ("uddn", "black_box"): (0.753, 0.0134),
    ("uddn_distillation", "clean"): (0.839, None), ("uddn_distillation", "white_box"): (0.612, None),
    ("uddn_distillation", "black_box"): (0.765, None),
}
# Table 3 lists "PGD [27]" again, with other accuracies (its "DCN [28]" row repeats Table 2's PGD row).
PAPER_TABLE3_PGD = {"clean": 0.833, "white_box": 0.514, "black_box": 0.700}


def _attack_set(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    h = x.shape[0] // 2
    a = attacks.fgsm(model, x[:h], y[:h], eps=8 / 255)
    b = attacks.pgd(model, x[h:], y[h:], eps=8 / 255, alpha=2 / 255, steps=4, random_start=False, seed=seed)
    return torch.cat([a, b])


def _student(images: torch.Tensor, labels: torch.Tensor, dev: torch.device, progress: bool) -> torch.nn.Module:
    fit_kw = {k: DISTILL[k] for k in ("epochs", "lr", "optimizer", "batch_size")}
    teacher = models.load("resnet20_cifar10", device=dev)
    dist.train_teacher(teacher, images, labels, device=dev, progress=progress, description="teacher", **fit_kw)
    student = models.load("resnet20_cifar10", device=dev)
    dist.train_student(student, teacher.eval(), images, labels, T=DISTILL["T"], lam=DISTILL["lam"], device=dev,
                       progress=progress, description="student", **fit_kw)
    return student.eval()


@tracked
def run(*, table: str | None = None, quick: bool = False, n: int | None = None, seed: int = 0,
        device: str | torch.device | None = None, progress: bool = False,
        quick_pgd_at: bool | None = None) -> dict[str, Any]:
    """Run the Tables 1-3 analogue and return the JSON-ready result.

    Args:
        table: ``"1-3"`` (the only one; default).
        quick: the small recipes (``advviz.artifacts.recipes.denoiser_recipe(kind, "quick")``, the quick PGD-AT model) and ``n = 128``.
        quick_pgd_at: use the quick PGD-AT recipe (default: as ``quick``). The full one
            (:data:`advviz.papers.protected.RECIPES`) takes hours on a CPU; the choice is
            recorded in ``config["pgd_at"]``.
        n: test images (default 1000; quick 128).
        seed: sampling and attack seed.
        device: default CPU.
    """
    table = table or "1-3"
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r} for the UDDN paper; choose one of {', '.join(TABLES)}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    config = "quick" if quick else "full"
    n = n or (128 if quick else 1000)
    model = models.load("resnet20_cifar10", device=dev)
    surrogate = models.load("resnet32_cifar10", device=dev)
    x, y = data.sample(data.load("cifar10", "test"), n, seed=seed)
    x, y = x.to(dev), y.to(dev)
    sets = {"clean": x, "white_box": _attack_set(model, x, y, seed), "black_box": _attack_set(surrogate, x, y, seed)}
    uddn_net, uddn_rec = load_denoiser("uddn", config=config, device=dev, progress=progress)
    dae_net, dae_rec = load_denoiser("dae", config=config, device=dev, progress=progress)
    pgd_net, pgd_den_rec = load_denoiser("pgd", config=config, device=dev, progress=progress)
    pgd_model, pgd_rec = protected.resnet20("pgd_at", quick=quick if quick_pgd_at is None else quick_pgd_at,
                                            device=dev, progress=progress)
    # Papernot's defensive distillation (clean images at T, deployed at T = 1); cached

    student_def, def_rec = dist.load_defensive_student("quick", device=dev, progress=progress)
    # the distillation students on the denoiser's training pairs (attacked images)
    xa_tr, _xc_tr, y_tr, _ = training_pairs(config, device=dev, progress=progress)
    with timer() as t_dist:
        student_raw = _student(xa_tr, y_tr, dev, progress)
        student_uddn = _student(purify(uddn_net, xa_tr), y_tr, dev, progress)
    defenses: dict[str, tuple[Any, torch.nn.Module]] = {
        "none": (None, model), "dae": (dae_net, model), "pgd": (pgd_net, model), "uddn": (uddn_net, model),
        "pgd_at": (None, pgd_model), "jpeg": ("jpeg", model), "distillation": (None, student_def),
        "adv_distillation": (None, student_raw), "uddn_distillation": (uddn_net, student_uddn)}
    def score(pre: Any, clf: torch.nn.Module, xs: torch.Tensor) -> tuple[float, float]:
        xin = xs if pre is None else jpeg(xs) if pre == "jpeg" else purify(pre, xs)
        return metrics.accuracy(clf, xin, y), float((xin - x).abs().mean())

    rows: list[dict[str, Any]] = []
    suites: dict[str, Any] = {}
    for name, (pre, clf) in defenses.items():
        for test_set, xs in sets.items():
            with timer() as t:
                acc, l1 = score(pre, clf, xs)
            paper_acc, paper_l1 = PAPER.get((name, test_set), (None, None))
            row = {"defense": name, "test_set": test_set, "threat": "oblivious", "accuracy": acc,
                   "paper_accuracy": paper_acc, "l1": l1, "paper_l1": paper_l1, "seconds": t["seconds"]}
            if name == "pgd":
                row["paper_table3_accuracy"] = PAPER_TABLE3_PGD[test_set]
            rows.append(row)
            if test_set == "white_box" and name != "none":
                # the adaptive row: the strong suite on the deployed classifier, the white-box set as transfer
                with timer() as t:
                    purifier = None if pre is None else "jpeg" if pre == "jpeg" else functools.partial(purify, pre)
                    ad = adaptive_attack(clf, x, y, eps=8 / 255, purifier=purifier, transfer=xs,
                                         transfer_name="the white-box set on the undefended resnet20_cifar10",
                                         seed=seed)
                    _, l1 = score(pre, clf, ad.x_adv)
                row = {"defense": name, "test_set": test_set, "threat": "adaptive", "accuracy": ad.accuracy,
                       "paper_accuracy": None, "l1": l1, "paper_l1": None, **ad.row(), "seconds": t["seconds"]}
                if name == "pgd":
                    row["paper_table3_accuracy"] = None
                rows.append(row)
                suites[name] = ad.config
    cfg = {"model": "resnet20_cifar10", "black_box_surrogate": "resnet32_cifar10", "paper_model": "FaceNet on LFW",
           "eps": 8 / 255, "attacks": "half FGSM, half I-FGSM-4 (alpha 2/255)", "n": n, "seed": seed, "quick": quick,
           "uddn": {k: v for k, v in uddn_rec.items() if k not in ("history", "artifact")},
           "dae": {k: v for k, v in dae_rec.items() if k not in ("history", "artifact")},
           "pgd": {**{k: v for k, v in pgd_den_rec.items() if k not in ("history", "artifact")},
                   "what": "Liao et al.'s pixel-guided denoiser (the paper's ref. [27]): the UDDN network, pixel L1 loss"},
           "pgd_at": {**pgd_rec, "note": "advviz's addition (PGD adversarial training); the paper has no such row"},
           "distillation": {**{k: v for k, v in def_rec.items() if k != "artifact"}, "what": "Papernot et al.'s defensive distillation (the paper's ref. [29])"},
           "adv_distillation": {**DISTILL, "init": "resnet20_cifar10 (fine-tuned)", "seconds": t_dist["seconds"],
                                "what": "teacher fine-tuned on the attacked training pairs (one-hot labels), student "
                                        "on its outputs (eq. 6); advviz's variant, no paper value"},
           "adaptive": {**ADAPTIVE, "rows": suites},
           "paper_tables": ("paper_accuracy: Table 2 (none, dae, pgd, uddn) or Table 3 (jpeg, distillation, "
                            "uddn_distillation); paper_l1: Table 1; paper_table3_accuracy: Table 3's 'PGD [27]'")}
    cfg["dae"]["deviation"] = ("the DAE's encoder stops at 16x16 (recipe levels=1) where the paper's UDDN goes to 2x2: "
                               "through a 2x2 bottleneck no DAE rebuilds a CIFAR image (the old one left ResNet-20 at "
                               ".195 clean); see advviz.artifacts.recipes.DAERecipe")
    cfg["health"] = _health(rows, {"dae": dae_rec, "pgd": pgd_den_rec, "uddn": uddn_rec, "distillation": def_rec,
                                   "pgd_at": pgd_rec})
    return result("uddn", table, cfg, f"CIFAR-10 test split (JPEG copy), {n} random images", rows)


def _health(rows: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each baseline's health: clean accuracy (and its share of the undefended model's) and final training loss."""
    clean = {r["defense"]: r["accuracy"] for r in rows if r["test_set"] == "clean" and r.get("threat", "oblivious")
             == "oblivious"}
    out = {}
    for name, acc in clean.items():
        rec = records.get(name, {})
        art = rec.get("artifact")
        training = art.training if art is not None else rec.get("training") or {}
        final = training.get("final") or {}
        out[name] = {"clean_accuracy": acc, "share_of_undefended": acc / clean["none"] if clean.get("none") else None,
                     "final_loss": final.get("loss") if isinstance(final, dict) else None}
    return out


def format(res: dict[str, Any]) -> str:
    """The result as a text table, paper values beside measured ones."""
    text = format_rows(res, columns=["defense", "test_set", "threat", "accuracy", "paper_accuracy",
                                     "paper_table3_accuracy", "end_to_end_accuracy", "l1", "paper_l1", "seconds"],
                       title="UDDN paper, Tables 1-3 (measured: CIFAR-10 ResNet-20; paper: FaceNet on LFW)")
    health = res["config"].get("health") or {}
    if health:
        lines = [f"  {name:<18} clean {h['clean_accuracy']:.3f}"
                 + (f" ({h['share_of_undefended']:.0%} of undefended)" if h.get("share_of_undefended") else "")
                 + (f", final training loss {h['final_loss']:.4f}" if isinstance(h.get("final_loss"), (int, float)) else "")
                 for name, h in health.items()]
        text += "\nbaseline health:\n" + "\n".join(lines)
    text += format_breakers(res["rows"], label=lambda r: r["defense"])
    return text
