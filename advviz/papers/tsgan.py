"""Reproduction of the TSGAN paper's experiments (paper 000: Liu et al., IEEE Access 2020).

``advviz reproduce tsgan --table T [--dataset mnist|cifar10]`` with T one of:

* ``6``: targeted ASR of FGSM, PGD-20, AdvGAN and TSGAN against LeNet-5 (MNIST column) or,
  with ``--dataset cifar10``, against ResNet-20 (the CIFAR-10 ResNet-20 column).
* ``7``: ASR against LeNet-5s adversarially trained with FGSM ("adv") and PGD ("iter") by
  :func:`advviz.train.adversarial_fit` (quick recipes :data:`AT_RECIPES`, labelled as such);
  TSGAN stage 2 and AdvGAN are retrained against each defended model. Quick mode only.
* ``8``: the CIFAR-10 version of Table 7 (ResNet-20 rows): "adv" is advviz's FGSM-based
  ``fast_at`` ResNet-20 (Wong et al.: FGSM from a random start), "iter" its ``pgd_at`` ResNet-20
  (PGD-7), both from :mod:`advviz.papers.protected` (``quick`` recipes: 2,000 images, one
  epoch of fine-tuning; labelled as such).
* ``9``: transfer — the same adversarial examples on a second classifier they were not trained
  against (MNIST: a ResNet-8 advviz trains on digits, independent of the target and of the
  stage-2 content network, :data:`TRANSFER_DIGITS_RECIPE`; CIFAR-10: ResNet-32, the paper's
  ResNet20 -> ResNet32 row).
* ``10``: TSGAN with and without the content loss (ASR).
* ``11``: quality — FID and SSIM of TSGAN (with/without content) and AdvGAN, all starting from
  G_norm's outputs (AdvGAN perturbs them), FID against one common set of real test images and
  against G_norm's outputs (the paper's reference), on features independent of the attacked
  model; ``12``: the same on CIFAR-10.
* ``13``: seconds to generate 1,000 adversarial examples.

Tables 8 and 12 are CIFAR-10 only, 7 and 11 MNIST only; the others take ``dataset``
(default ``mnist``).

Data and models, MNIST column: quick mode trains on the **digits** train split (scikit-learn's
8x8 digits upsampled to 28x28, 1,437 images) against advviz's ``lenet5_digits`` and evaluates on
the digits test split (359 images) / 1,000 generated examples; the full mode uses the MNIST
*test* split divided by :func:`advviz.data.holdout_split` (80% to train TSGAN, AdvGAN and a
LeNet-5, 20% to evaluate), since only MNIST's test split is available here, with Table 3's
settings.

CIFAR-10 column (the JPEG re-encoding in ``$ADVVIZ_DATA``, on which the published ResNet-20
scores 81%): target model the published ``resnet20_cifar10`` (the paper trains its own). Quick
mode trains TSGAN and AdvGAN (both ``cifar10_quick``) on a seeded subset of 4,000 train images
(:data:`CIFAR_QUICK`) and attacks 500
seeded test images; the full mode uses Table 4's settings on the whole train split and 2,000
test images (never run on this CPU: 3,000 + 1,000 epochs). The content network is ImageNet
VGG-16 if available, else the zoo ``vgg16_cifar10``, else a slim VGG-16 advviz trains on
CIFAR-10 (its name says which).

Training budget: AdvGAN trains for TSGAN's stage-2 epochs on the same images
(:func:`matched_advgan_config`; both generators then spend the same images x epochs on the
attack; TSGAN's stage 1 learns the data distribution). Every result records the budgets
(``config["training_budget"]``) and each generator's final losses (``config["final_losses"]``);
Tables 6 and 10 add TSGAN's semantic drift (:func:`semantic_drift`).

Attack settings (the paper gives none for FGSM/PGD): L-inf eps = 0.3 on MNIST (its usual
budget) and 8/255 on CIFAR-10 (its usual budget), PGD 20 steps of alpha = 2.5 * eps / 20 from a
random start. ASR is *targeted* for every method (the fraction classified as the target, over
test images whose label is not the target; for TSGAN over generated images), the quantity
TSGAN optimises; FGSM/PGD also report ``asr_untargeted`` (untargeted attacks' fraction
misclassified). The paper's FGSM and PGD values are untargeted, so they are shown as
``paper_asr_untargeted`` beside that measurement, never beside the targeted one. Quick mode
attacks target class 0 only (the paper's
figures use target 0: the digit 0 and "plane"); the full mode every class.

Every network is an :mod:`advviz.artifacts` entry: the target models, the content network, the
transfer model, the robust LeNets and the protected ResNet-20s are registered in the catalogue (:mod:`advviz.zoo`); the
generators are registered on demand (:func:`tsgan_stage1`, :func:`tsgan_stage2`,
:func:`advgan_for`) under names that say what they are made from
(``tsgan_<config>_s<seed>_t<targets>_vs_<target model>[_nocontent]``,
``advgan_<config>_n<images>_s<seed>_t<t>_vs_<target model>``), with the stage-1, target and
content-network artefacts as upstream and the training images' sha256 in the recipe. A file made from another target, content network, stage 1, data or recipe
is retrained, never reused; later tables and runs reuse the rest (``<cache>/weights``). Every
result carries the records of all of them (``"provenance"``), and ``config["content_network"]``
is the one the generator was trained with, read from its record.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from typing import Any

import torch

from advviz import artifacts, data, metrics, models
from advviz import attacks as atk
from advviz.artifacts import recipes as _recipes
from advviz.generative import advgan as A
from advviz.generative import tsgan as T
from advviz.generative.fid import fid, fid_network
from advviz.papers import protected
from advviz.papers._common import format_rows, result, tracked
from advviz.train import default_device
from advviz.zoo import robust_lenet_name
from advviz.zoo.generators import advgan_for, last_epoch, tsgan_stage1, tsgan_stage2

__all__ = ["PAPER", "TABLES", "format", "run"]

log = logging.getLogger(__name__)

TABLES = ("6", "7", "8", "9", "10", "11", "12", "13")
DATASETS = ("mnist", "cifar10")
# Which column(s) of the paper each table has.
TABLE_DATASETS: dict[str, tuple[str, ...]] = {"6": DATASETS, "7": ("mnist",), "8": ("cifar10",), "9": DATASETS,
                                              "10": DATASETS, "11": ("mnist",), "12": ("cifar10",), "13": DATASETS}

# Quick CIFAR-10 sizes: TSGAN's training subset (seeded permutation of the train split, seed 0),
# AdvGAN's (the first images of that subset) and the attacked test images (data.sample, seed 0).
CIFAR_QUICK: dict[str, int] = {"train": 4000, "advgan_train": 4000, "test": 500}
# Table 8's two defenses -> advviz.papers.protected recipes.
CIFAR_DEFENSES: dict[str, str] = {"adv": "fast_at", "iter": "pgd_at"}

# Quick adversarially trained LeNet-5s for Table 7 (artefacts lenet5_digits_<kind>_quick, fine-tuned
# from lenet5_digits on the digits train split with advviz.train.adversarial_fit): "adv" = FGSM
# adversarial training (Goodfellow et al.: half clean, half FGSM loss), "iter" = iterative (PGD)
# adversarial training (Madry et al.; eps 0.3 collapsed to a constant prediction, 9.2% clean accuracy
# measured, hence 0.1). Typed recipes: advviz.artifacts.recipes.ROBUST_LENET.
AT_RECIPES = _recipes.ROBUST_LENET

# The paper's MNIST / LeNet-5 numbers (fractions; seconds for Table 13). The paper's FGSM and PGD
# are untargeted ("the target cannot be specified in the FGSM attack", Sec. II; an attack succeeds
# when "the classifier gives a different category", Sec. IV-C), so their values are
# ``asr_untargeted`` and stand beside advviz's untargeted measurement; AdvGAN's and TSGAN's are
# targeted generators, beside the targeted ``asr``.
PAPER: dict[str, dict[str, dict[str, float]]] = {
    "6": {"fgsm": {"asr_untargeted": 0.8263}, "pgd": {"asr_untargeted": 0.9829}, "advgan": {"asr": 0.8866},
          "tsgan": {"asr": 0.9531}},
    "7:adv": {"fgsm": {"asr_untargeted": 0.1062}, "pgd": {"asr_untargeted": 0.9498}, "advgan": {"asr": 0.1161},
              "tsgan": {"asr": 0.4584}},
    "7:iter": {"fgsm": {"asr_untargeted": 0.1423}, "pgd": {"asr_untargeted": 0.1154}, "advgan": {"asr": 0.1002},
               "tsgan": {"asr": 0.2310}},
    # Tables 11-12: FID and SSIM against WGAN-GP's (G_norm's) outputs, the paper's "comparison criteria"
    "11": {"tsgan_no_content": {"fid_g_norm": 276.63, "ssim": 0.7863}, "tsgan": {"fid_g_norm": 131.42, "ssim": 0.7878},
           "advgan": {"fid_g_norm": 276.19, "ssim": 0.4772}},
    "13": {"fgsm": {"seconds_per_1000": 0.66}, "pgd": {"seconds_per_1000": 4.83},
           "advgan": {"seconds_per_1000": 0.036}, "tsgan": {"seconds_per_1000": 0.013}},
    # CIFAR-10, ResNet-20 rows/columns.
    "6:cifar10": {"fgsm": {"asr_untargeted": 0.7968}, "pgd": {"asr_untargeted": 0.9281},
                  "advgan": {"asr": 0.9496},
                  "tsgan": {"asr": 0.9583}},
    # CIFAR-10, ResNet-32 column of Table 6.
    "6:cifar10:resnet32": {"fgsm": {"asr_untargeted": 0.8437}, "pgd": {"asr_untargeted": 0.9320},
                           "advgan": {"asr": 0.9213},
                           "tsgan": {"asr": 0.9828}},
    "8:adv": {"fgsm": {"asr_untargeted": 0.1369}, "pgd": {"asr_untargeted": 0.7688}, "advgan": {"asr": 0.1374},
              "tsgan": {"asr": 0.1813}},
    "8:iter": {"fgsm": {"asr_untargeted": 0.3396}, "pgd": {"asr_untargeted": 0.3914}, "advgan": {"asr": 0.1616},
               "tsgan": {"asr": 0.1241}},
    "9:cifar10": {"advgan": {"asr": 0.4068}, "tsgan": {"asr": 0.7309}},  # trained on ResNet20, attacking ResNet32
    "12": {"tsgan_no_content": {"fid_g_norm": 37.08, "ssim": 0.6673}, "tsgan": {"fid_g_norm": 8.42, "ssim": 0.7975},
           "advgan": {"fid_g_norm": 11.08, "ssim": 0.7665}},
}
EPS = 0.3  # MNIST
EPS_CIFAR = 8 / 255
PGD_STEPS = 20


def _eps(s: dict[str, Any]) -> float:
    return EPS_CIFAR if s.get("dataset") == "cifar10" else EPS


CIFAR_MODELS = ("resnet20", "resnet32")


def _load_data(quick: bool, dataset: str, device: torch.device, progress: bool,
               model: str = "resnet20") -> dict[str, Any]:
    """Training/test images, the target model and descriptions for one column of the paper
    (``model``: the CIFAR-10 target, one of :data:`CIFAR_MODELS`)."""
    if dataset == "cifar10":
        train_set = data.load("cifar10", "train")
        n_test = CIFAR_QUICK["test"] if quick else 2000
        if quick:
            idx = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))[:CIFAR_QUICK["train"]]
            x_tr, y_tr = train_set.tensors(idx)
            n_adv = CIFAR_QUICK["advgan_train"]
            train_desc = (f"a seeded subset of {CIFAR_QUICK['train']:,} CIFAR-10 train images (randperm, seed 0) "
                          f"trains TSGAN, its first {n_adv:,} AdvGAN")
            if n_adv == len(x_tr):
                train_desc = (f"a seeded subset of {len(x_tr):,} CIFAR-10 train images (randperm, seed 0) trains "
                              "TSGAN and AdvGAN")
        else:
            x_tr, y_tr = train_set.tensors()
            n_adv = len(x_tr)
            train_desc = "the CIFAR-10 train split (50,000) trains TSGAN and AdvGAN"
        x_te, y_te = data.sample(data.load("cifar10", "test"), n_test, seed=0)
        return {"cfg_name": "cifar10_quick" if quick else "cifar10", "x_tr": x_tr, "y_tr": y_tr,
                "x_adv_tr": x_tr[:n_adv], "y_adv_tr": y_tr[:n_adv], "x_te": x_te, "y_te": y_te,
                "target_artifact": f"{model}_cifar10", "model_name": model,
                "data_key": f"cifar10:train:{'randperm-seed0-' + str(len(x_tr)) if quick else 'all'}",
                "target_label": f"{model}_cifar10", "targets": [0] if quick else list(range(10)),
                "content_ds": "cifar10",
                "data": (f"CIFAR-10 (JPEG re-encoding; resnet20_cifar10 scores 81% on it): {train_desc}; "
                         f"{n_test:,} test images (data.sample, seed 0) are attacked; target model {model}_cifar10")}
    if quick:
        x_tr, y_tr = data.load("digits", "train").tensors()
        x_te, y_te = data.load("digits", "test").tensors()
        return {"cfg_name": "digits_quick", "x_tr": x_tr, "y_tr": y_tr, "x_adv_tr": x_tr, "y_adv_tr": y_tr,
                "x_te": x_te, "y_te": y_te, "target_artifact": "lenet5_digits", "data_key": "digits:train",
                "model_name": "lenet5", "target_label": "lenet5_digits", "targets": [0], "content_ds": "digits",
                "data": ("digits (scikit-learn, 28x28): train split (1,437) to train the GANs, test split (359) "
                         "to attack; target model lenet5_digits")}
    tr, te = data.holdout_split(data.load("mnist", "test"), 0.2, seed=0)
    x_tr, y_tr = tr.tensors()
    x_te, y_te = te.tensors()
    return {"cfg_name": "mnist", "x_tr": x_tr, "y_tr": y_tr, "x_adv_tr": x_tr, "y_adv_tr": y_tr, "x_te": x_te,
            "y_te": y_te, "target_artifact": "lenet5_mnist_holdout", "data_key": "mnist:test:holdout-0.2-seed0-part",
            "model_name": "lenet5", "target_label": "lenet5 (mnist part)",
            "targets": list(range(10)), "content_ds": "mnist",
            "data": ("MNIST test split divided by holdout_split(0.2, seed=0): 8,000 images train the GANs and a "
                     "LeNet-5 (artefact lenet5_mnist_holdout), 2,000 held-out images are attacked")}


def _setup(quick: bool, seed: int, device: torch.device, progress: bool = False,
           dataset: str = "mnist", model: str = "resnet20") -> dict[str, Any]:
    """Load (or train) everything the tables of one dataset share: the target model, the content
    network and the generators, all :mod:`advviz.artifacts` (a generator is retrained when its
    target, content network, stage 1, data or recipe changed)."""
    t_start = time.perf_counter()
    d = _load_data(quick, dataset, device, progress, model)
    cfg = T.CONFIGS[d["cfg_name"]]
    acfg = matched_advgan_config(cfg, A.ADVGAN_CONFIGS[d["cfg_name"]])
    x_tr, targets = d["x_tr"], d["targets"]
    target_model, _ = artifacts.get(d["target_artifact"], device=device, progress=progress)
    content = T.content_network(d["content_ds"], device=device, progress=progress)
    stage1, s1_rec = tsgan_stage1(cfg, x_tr, seed=seed, data=d["data_key"], device=device, progress=progress)
    common = {"seed": seed, "data": d["data_key"], "stage1": stage1, "stage1_artifact": s1_rec.name,
              "target_model": target_model, "target_artifact": d["target_artifact"], "target_label": d["target_label"],
              "device": device, "progress": progress}
    gan, gan_rec = tsgan_stage2(cfg, x_tr, targets, content=content, **common)
    gan_nc, _ = tsgan_stage2(cfg.replace(lambda_content=0.0), x_tr, targets, content=None, **common)
    advgans = {t: advgan_for(acfg, d["x_adv_tr"], d["y_adv_tr"], t, seed=seed, data=d["data_key"],
                             target_model=target_model, target_artifact=d["target_artifact"],
                             target_label=d["target_label"], device=device, progress=progress)[0] for t in targets}
    trained_with = next((u for u in gan_rec.upstream if u.name == content.artifact), None)
    eps = EPS_CIFAR if dataset == "cifar10" else EPS
    n_gan = len(x_tr) if cfg.max_images is None else min(len(x_tr), cfg.max_images)
    budget = {"tsgan_stage1": {"images": n_gan, "epochs": cfg.epochs_normal},
              "tsgan_stage2": {"images": n_gan, "epochs": cfg.epochs_adv},
              "advgan": {"images": len(d["x_adv_tr"]), "epochs": acfg.epochs},
              "rule": ("AdvGAN gets TSGAN's adversarial (stage-2) budget, images x epochs: both then train "
                       "their attack for the same passes over the same images; TSGAN's stage 1 learns the image "
                       "distribution, which AdvGAN takes from its input images")}
    final = {"tsgan": {t: last_epoch(gan.history.get(f"adv_{t}")) for t in targets},
             "tsgan_no_content": {t: last_epoch(gan_nc.history.get(f"adv_{t}")) for t in targets},
             "tsgan_stage1": last_epoch(gan.history.get("normal")),
             "advgan": {t: last_epoch(advgans[t].history) for t in targets}}
    config = {"quick": quick, "seed": seed, "dataset": dataset, "training_budget": budget, "final_losses": final,
              "tsgan_config": cfg.__dict__ | {"betas": list(cfg.betas)},
              "advgan_config": acfg.__dict__, "targets": targets,
              # what the generator was trained with (its record), not what today's code would pick
              "content_network": gan.info.get("content_network"),
              "content_network_artifact": None if trained_with is None else
              {"name": trained_with.name, "sha256": trained_with.sha256, "recipe_hash": trained_with.recipe_hash},
              "fgsm": {"eps": eps}, "pgd": {"eps": eps, "alpha": 2.5 * eps / PGD_STEPS, "steps": PGD_STEPS},
              "tsgan_epochs_done": gan.epochs_done, "target_model": gan.info.get("target_model"),
              "paper_values": ("FGSM/PGD: the paper's untargeted ASR, beside asr_untargeted; AdvGAN/TSGAN: "
                               "targeted, beside asr"),
              "tsgan_stage2_batchnorm": T.STAGE2_BATCHNORM, "tsgan_content_normalisation": T.CONTENT_NORMALISATION}
    out = {"cfg": cfg, "acfg": acfg, "gan": gan, "gan_nc": gan_nc, "advgans": advgans, "target_model": target_model,
           "content": content, "stage1": stage1, "stage1_artifact": s1_rec.name, "data_key": d["data_key"],
           "x_tr": x_tr, "x_adv_tr": d["x_adv_tr"], "y_adv_tr": d["y_adv_tr"],
           "x_te": d["x_te"].to(device), "y_te": d["y_te"].to(device), "targets": targets, "dataset": dataset,
           "model_name": d["model_name"], "data": d["data"], "config": config,
           "setup_seconds": time.perf_counter() - t_start}
    return out


def matched_advgan_config(cfg: Any, acfg: Any) -> Any:
    """``acfg`` with TSGAN's stage-2 epochs: AdvGAN and TSGAN's adversarial stage then see the same
    images the same number of times (both train on the same images; see ``_setup``)."""
    return dataclasses.replace(acfg, epochs=cfg.epochs_adv)


def semantic_drift(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    """TSGAN's semantic drift: how often a classifier independent of the attack (MNIST column:
    Table 9's ResNet-8 on digits; CIFAR-10: the other published ResNet) assigns ``G_adv(z)`` to the
    target, beside how often it already assigns ``G_norm(z)`` (same ``z``) to it. A large ``drift``
    means the generator changed what the image shows, not only what the attacked model says."""
    if s.get("dataset") == "cifar10":
        other = "resnet32" if s.get("model_name", "resnet20") == "resnet20" else "resnet20"
        clf, name = models.load(f"{other}_cifar10", device=s["x_te"].device), f"{other}_cifar10 (published)"
    else:
        clf, rec = transfer_digits_model()
        clf, name = _on(clf, s["x_te"].device), rec["name"]
    out: dict[str, Any] = {"classifier": name, "n": n}
    with torch.no_grad():
        for t in s["targets"]:
            base = float((clf(s["gan"].generate(n, None, seed=seed)).argmax(1) == t).float().mean())
            for key in ("tsgan", "tsgan_no_content"):
                gan = s["gan"] if key == "tsgan" else s["gan_nc"]
                share = float((clf(gan.generate(n, t, seed=seed)).argmax(1) == t).float().mean())
                out.setdefault(key, {})[t] = {"g_norm_share": round(base, 4), "g_adv_share": round(share, 4),
                                              "drift": round(share - base, 4)}
    return out


def _paper(table: str, attack: str, metric: str) -> dict[str, float]:
    v = PAPER.get(table, {}).get(attack, {}).get(metric)
    return {f"paper_{metric}": v} if v is not None else {}


def _targeted_images(s: dict[str, Any], t: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep = s["y_te"] != t
    return s["x_te"][keep][:n], s["y_te"][keep][:n]


def _asr_rows(s: dict[str, Any], n: int, seed: int, table: str, model: torch.nn.Module, model_name: str,
              attacks: tuple[str, ...], paper_key: str | None = None) -> list[dict[str, Any]]:
    """Targeted ASR of ``attacks`` (crafted on ``s["target_model"]``) measured on ``model``."""
    tm = s["target_model"]
    eps = _eps(s)
    acc: dict[str, list[tuple[float, float | None, int]]] = {a: [] for a in attacks}
    for t in s["targets"]:
        x, y = _targeted_images(s, t, n)
        tgt = torch.full_like(y, t)
        for a in attacks:
            untargeted: float | None = None
            if a in ("tsgan", "tsgan_no_content"):
                gan = s["gan"] if a == "tsgan" else s["gan_nc"]
                x_adv = gan.generate(n, t, seed=seed)
                tgt_a = torch.full((n,), t, dtype=torch.long, device=x_adv.device)
                rate = metrics.asr(model, x_adv, tgt_a, tgt_a)
                count = n
            else:
                if a == "fgsm":
                    x_adv = atk.fgsm(tm, x, tgt, eps=eps, targeted=True)
                    x_un = atk.fgsm(tm, x, y, eps=eps)
                elif a == "pgd":
                    kw = {"eps": eps, "alpha": 2.5 * eps / PGD_STEPS, "steps": PGD_STEPS, "seed": seed}
                    x_adv = atk.pgd(tm, x, tgt, targeted=True, **kw)
                    x_un = atk.pgd(tm, x, y, **kw)
                else:
                    x_adv = s["advgans"][t].attack(x)
                    x_un = None
                rate = metrics.asr(model, x_adv, y, tgt)
                if x_un is not None:
                    untargeted = metrics.asr(model, x_un, y)
                count = x.shape[0]
            acc[a].append((rate, untargeted, count))
    rows = []
    for a in attacks:
        total = sum(c for _, _, c in acc[a])
        row: dict[str, Any] = {"table": table, "attack": a, "model": model_name,
                               "asr": sum(r * c for r, _, c in acc[a]) / total}
        if all(u is not None for _, u, _ in acc[a]):
            row["asr_untargeted"] = sum(u * c for _, u, c in acc[a]) / total  # type: ignore[operator]
        row["n"] = total
        row.update(_paper(paper_key or table, a, "asr"))
        row.update(_paper(paper_key or table, a, "asr_untargeted"))
        rows.append(row)
    return rows


def _column_key(s: dict[str, Any], table: str) -> str:
    if s.get("dataset") != "cifar10":
        return table
    return f"{table}:cifar10" + ("" if s.get("model_name", "resnet20") == "resnet20" else f":{s['model_name']}")


def table6(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    rows = _asr_rows(s, n, seed, "6", s["target_model"], s.get("model_name", "lenet5"),
                     ("fgsm", "pgd", "advgan", "tsgan"), paper_key=_column_key(s, "6"))
    return result("tsgan", "6", dict(s["config"], semantic_drift=semantic_drift(s, n, seed)), s["data"], rows)


def _robust_lenet(s: dict[str, Any], kind: str) -> tuple[torch.nn.Module, float, Any]:
    """Table 7's adversarially trained LeNet-5 ``kind`` (artefact ``lenet5_digits_<kind>_quick``,
    recipe :data:`AT_RECIPES`), its clean accuracy on the attacked images, and its record."""
    model, rec = artifacts.get(robust_lenet_name(kind), device=s["x_te"].device)
    return model, _accuracy(model, s), rec


def _accuracy(model: torch.nn.Module, s: dict[str, Any]) -> float:
    with torch.no_grad():
        return float((model(s["x_te"]).argmax(1) == s["y_te"]).float().mean())


def _defended_rows(s: dict[str, Any], n: int, seed: int, table: str, kind: str, model: torch.nn.Module,
                   model_name: str, artifact: str | None = None) -> list[dict[str, Any]]:
    """ASR rows against one defended model (artefact ``artifact`` when it is one); TSGAN's stage 2
    (from the shared stage 1) and AdvGAN are retrained against it (artefacts whose upstream is the
    defended model, so a changed defense retrains them)."""
    dev = s["x_te"].device
    data = s.get("data_key", s["data"])
    label = artifact or f"{model_name.split()[0]}_{kind}"
    gan, _ = tsgan_stage2(s["cfg"], s["x_tr"], s["targets"], seed=seed, data=data, stage1=s.get("stage1", s["gan"]),
                          stage1_artifact=s.get("stage1_artifact"), target_model=model, target_artifact=artifact,
                          target_label=label, content=s["content"], device=dev)
    advgans = {t: advgan_for(s["acfg"], s["x_adv_tr"], s["y_adv_tr"], t, seed=seed, data=data, target_model=model,
                             target_artifact=artifact, target_label=label, device=dev)[0] for t in s["targets"]}
    sub = dict(s, target_model=model, gan=gan, advgans=advgans)
    rows = []
    for r in _asr_rows(sub, n, seed, table, model, model_name, ("fgsm", "pgd", "advgan", "tsgan"),
                       paper_key=f"{table}:{kind}"):
        r["defense"] = kind
        rows.append(r)
    return rows


def table7(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    """ASR against adversarially trained LeNet-5s; TSGAN's and AdvGAN's stage 2 / training is redone
    against each defended model (TSGAN reuses stage 1)."""
    if not s["config"]["quick"]:
        raise ValueError("Table 7 is implemented for --quick (digits) only")

    rows, accs, recipes = [], {}, {}
    for kind in ("adv", "iter"):
        model, accs[kind], rec = _robust_lenet(s, kind)
        recipes[kind] = {"name": rec.name, "recipe": rec.recipe, "recipe_hash": rec.recipe_hash, "sha256": rec.sha256}
        rows += _defended_rows(s, n, seed, "7", kind, model, f"lenet5 ({kind}-trained, quick)",
                               artifact=robust_lenet_name(kind))
    cfg = dict(s["config"], at_recipes=recipes, clean_accuracy={k: round(v, 4) for k, v in accs.items()},
               note="quick adversarial-training recipes (3 epochs fine-tuning on digits), far weaker than the paper's")
    return result("tsgan", "7", cfg, s["data"], rows)


def table8(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    """Table 8 (CIFAR-10): ASR against adversarially trained ResNet-20s ("adv": advviz's FGSM-based
    ``fast_at``, "iter": ``pgd_at``; :mod:`advviz.papers.protected`, quick recipes in quick mode);
    TSGAN's stage 2 and AdvGAN are retrained against each (TSGAN reuses stage 1)."""
    quick = s["config"]["quick"]
    rows, records = [], {}
    for kind, recipe in CIFAR_DEFENSES.items():
        model, rec = protected.resnet20(recipe, quick=quick, device=s["x_te"].device)
        rec = dict(rec, clean_accuracy_attacked=round(_accuracy(model, s), 4))
        records[kind] = rec
        label = f"resnet20 ({recipe}{', quick' if quick else ''})"
        rows += _defended_rows(s, n, seed, "8", kind, model, label, artifact=rec.get("name"))
    cfg = dict(s["config"], defended_models=records, defenses=CIFAR_DEFENSES,
               note=("adv = FGSM adversarial training (advviz fast_at: FGSM from a random start, eps 8/255), "
                     "iter = PGD-7 adversarial training (pgd_at); fine-tuned from resnet20_cifar10"
                     + (" with the quick recipes (2,000 images, 1 epoch), far weaker than the paper's" if quick else "")))
    return result("tsgan", "8", cfg, s["data"], rows)


def table9(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    if s.get("dataset") == "cifar10":
        src = s.get("model_name", "resnet20")
        dst = "resnet20" if src == "resnet32" else "resnet32"
        other = models.load(f"{dst}_cifar10", device=s["x_te"].device)
        rows = _asr_rows(s, n, seed, "9", other, f"{dst}_cifar10 (transfer from {src})",
                         ("fgsm", "pgd", "advgan", "tsgan"), paper_key="9:cifar10" if src == "resnet20" else None)
        cfg = dict(s["config"], transfer_model=f"{dst}_cifar10 (published weights)")
        return result("tsgan", "9", cfg, s["data"], rows)
    other, rec = transfer_digits_model()
    other = _on(other, s["x_te"].device)
    rows = _asr_rows(s, n, seed, "9", other, "resnet8_digits (transfer from lenet5)",
                     ("fgsm", "pgd", "advgan", "tsgan"))
    cfg = dict(s["config"], transfer_model=rec)
    return result("tsgan", "9", cfg, s["data"], rows)


# Table 9's MNIST analogue attacks a classifier trained independently of everything TSGAN saw: not
# the target (LeNet-5), not the stage-2 content network (a slim VGG-16 on digits), but a CIFAR-style
# ResNet-8 with one input channel, trained by advviz on the digits train split with its own seed
# (artefact resnet8_digits_transfer).
TRANSFER_DIGITS_RECIPE = _recipes.TRANSFER_DIGITS


def _on(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device``: itself when it is there, else a copy (a shared artefact is never moved)."""
    p = next(model.parameters(), None)
    return model if p is None or p.device == torch.device(device) else copy.deepcopy(model).to(device)


def transfer_digits_model() -> tuple[torch.nn.Module, dict[str, Any]]:
    """The MNIST-column transfer model of Table 9 (artefact ``resnet8_digits_transfer``, recipe
    :data:`TRANSFER_DIGITS_RECIPE`): the shared, frozen module on the CPU and its record (recipe,
    digits test accuracy measured after training); trained on first use (seconds)."""
    model, rec = artifacts.get("resnet8_digits_transfer")
    acc = next((v for k, v in rec.training.get("metrics", {}).items() if k.startswith("clean_accuracy")), None)
    return model, {"name": "resnet8_digits (advviz-trained, independent of the target and the content network)",
                   "artifact": rec.name, "sha256": rec.sha256, "recipe": rec.recipe, "recipe_hash": rec.recipe_hash,
                   "digits_test_accuracy": acc,
                   "not": "lenet5_digits (the target) nor vgg16slim_digits (TSGAN's stage-2 content network)"}


def table10(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    rows = _asr_rows(s, n, seed, "10", s["target_model"], s.get("model_name", "lenet5"),
                     ("tsgan_no_content", "tsgan"))
    return result("tsgan", "10", dict(s["config"], semantic_drift=semantic_drift(s, n, seed)), s["data"], rows)


def _fid_features(s: dict[str, Any]) -> Any:
    """FID features independent of the attacked model: Inception-v3 when its weights are there,
    else the penultimate features of a classifier the generators never saw (MNIST column: Table
    9's ResNet-8 trained on digits; CIFAR-10: the other published ResNet)."""
    if s.get("dataset") == "cifar10":
        other = "resnet32" if s.get("model_name", "resnet20") == "resnet20" else "resnet20"
        net = models.load(f"{other}_cifar10", device=s["x_te"].device)
        return fid_network(net, fallback_name=f"{other}_cifar10 (published; not the attacked model)")
    model, _ = transfer_digits_model()
    return fid_network(_on(model, s["x_te"].device),
                       fallback_name="resnet8_digits (Table 9's independent transfer model; not the attacked LeNet-5)")


def _quality(s: dict[str, Any], n: int, seed: int, table: str) -> dict[str, Any]:
    """FID and SSIM (Table 11 on MNIST, Table 12 on CIFAR-10), every method measured the same way.

    All methods start from the same images: ``G_norm(z)`` for the same noise ``z`` (the paper's
    "comparison criteria", WGAN-GP's outputs): TSGAN gives ``G_adv(z)``, AdvGAN perturbs
    ``G_norm(z)`` itself, and the ``g_norm`` row is ``G_norm(z)`` unattacked. Columns:

    * ``fid``: against one common set of *real* images (the first ``n`` test images), for every
      method and target, on features of a network independent of the attacked one
      (:func:`_fid_features`);
    * ``fid_g_norm``: against ``G_norm(z)`` (the paper's reference; its values stand beside it);
    * ``ssim``: each output against ``G_norm(z)`` of the same ``z`` (one pairing for all methods).
    """
    model_name = s.get("model_name", "lenet5")
    net = _fid_features(s)
    real = s["x_te"][:n]
    rows = []
    for a in ("g_norm", "tsgan_no_content", "tsgan", "advgan"):
        fids, fids_g, ssims = [], [], []
        for t in s["targets"]:
            ref = s["gan"].generate(n, None, seed=seed)
            if a == "g_norm":
                x_adv = ref
            elif a == "advgan":
                x_adv = s["advgans"][t].attack(ref)
            else:
                x_adv = (s["gan"] if a == "tsgan" else s["gan_nc"]).generate(n, t, seed=seed)
            fids.append(fid(x_adv, real, net))
            fids_g.append(fid(x_adv, ref, net))
            ssims.append(float(metrics.ssim(x_adv, ref)))
        row = {"table": table, "attack": a, "model": model_name, "fid": sum(fids) / len(fids),
               "fid_g_norm": None if a == "g_norm" else sum(fids_g) / len(fids_g),
               "ssim": None if a == "g_norm" else sum(ssims) / len(ssims)}
        row.update(_paper(table, a, "fid_g_norm"))
        row.update(_paper(table, a, "ssim"))
        rows.append(row)
    cfg = dict(s["config"], fid_features=net.name,
               fid_reference=(f"fid: the same {real.shape[0]} real test images for every method and target; "
                              "fid_g_norm: G_norm(z) for the same noise (the paper's reference)"),
               ssim_pairing=("every method's output against G_norm(z) for the same z: TSGAN's G_adv(z), and "
                             "AdvGAN applied to G_norm(z) itself"))
    return result("tsgan", table, cfg, s["data"], rows)


def table11(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    return _quality(s, n, seed, "11")


def table12(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    return _quality(s, n, seed, "12")


def table13(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    tm = s["target_model"]
    eps = _eps(s)
    t = s["targets"][0]
    n_time = 1000
    x = s["x_te"]
    reps = -(-n_time // x.shape[0])
    x = x.repeat(reps, 1, 1, 1)[:n_time]
    tgt = torch.full((n_time,), t, dtype=torch.long, device=x.device)
    fns = {
        "fgsm": lambda: atk.fgsm(tm, x, tgt, eps=eps, targeted=True),
        "pgd": lambda: atk.pgd(tm, x, tgt, eps=eps, alpha=2.5 * eps / PGD_STEPS, steps=PGD_STEPS, targeted=True),
        "advgan": lambda: s["advgans"][t].attack(x),
        "tsgan": lambda: s["gan"].generate(n_time, t, seed=seed),
    }
    rows = []
    for a, fn in fns.items():
        fn()  # warm-up
        times = []
        for _ in range(3):
            if x.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if x.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        row = {"table": "13", "attack": a, "model": s.get("model_name", "lenet5"), "seconds_per_1000": min(times)}
        row.update(_paper("13", a, "seconds_per_1000"))
        rows.append(row)
    cfg = dict(s["config"], timing=f"best of 3 runs after a warm-up, 1,000 images, {x.device.type}, "
                                  f"torch threads {torch.get_num_threads()}; the paper: an RTX 2080 GPU")
    return result("tsgan", "13", cfg, s["data"], rows)


_TABLE_FNS = {"6": table6, "7": table7, "8": table8, "9": table9, "10": table10, "11": table11, "12": table12,
              "13": table13}


@tracked
def run(*, table: str | None = None, quick: bool = False, n: int | None = None, seed: int = 0,
        device: str | torch.device | None = None, progress: bool = False,
        dataset: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Run one of the paper's experiments (default Table 6) and return the JSON-ready result.

    Args:
        table: one of ``TABLES``.
        quick: the quick configurations: digits + LeNet-5 (``digits_quick``) for the MNIST
            column, 4,000 CIFAR-10 images + ResNet-20 (``cifar10_quick``) for the CIFAR-10 one;
            target 0 only. The first call trains the generators (and, on CIFAR-10, the slim
            content network and for Table 8 the defended ResNet-20s); later tables reuse them
            from the cache.
        n: attacked / generated images per target (default 1,000, capped by the test images
            for FGSM/PGD/AdvGAN).
        seed: training and noise seed.
        device: default CUDA when available.
        progress: show training progress bars.
        dataset: the paper's column, ``"mnist"`` or ``"cifar10"`` (default: ``cifar10`` for
            Tables 8 and 12, else ``mnist``); see :data:`TABLE_DATASETS`.
        model: the CIFAR-10 target model, ``"resnet20"`` (default) or ``"resnet32"`` (the paper's
            Table 6 ResNet-32 column; Table 9 then transfers to ResNet-20). Table 8 needs
            adversarially trained versions, which advviz makes for ResNet-20 only.

    Raises:
        ValueError: an unknown table or dataset, or a table the dataset does not have.
    """
    table = table or "6"
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r} for the TSGAN paper; choose one of {', '.join(TABLES)}")
    ds = dataset or ("cifar10" if TABLE_DATASETS[table] == ("cifar10",) else "mnist")
    if ds not in DATASETS:
        raise ValueError(f"unknown dataset {ds!r} for the TSGAN paper; choose one of {', '.join(DATASETS)}")
    if ds not in TABLE_DATASETS[table]:
        hint = {"7": " (its CIFAR-10 version is Table 8)", "8": " (its MNIST version is Table 7)",
                "11": " (its CIFAR-10 version is Table 12)", "12": " (its MNIST version is Table 11)"}.get(table, "")
        raise ValueError(f"Table {table} has no {ds} column{hint}")
    model = model or "resnet20"
    if ds != "cifar10" and model != "resnet20":
        raise ValueError(f"model={model!r} picks a CIFAR-10 target; the {ds} column attacks LeNet-5")
    if model not in CIFAR_MODELS:
        raise ValueError(f"unknown CIFAR-10 target {model!r}; choose one of {', '.join(CIFAR_MODELS)}")
    if table == "8" and model != "resnet20":
        raise ValueError("Table 8 attacks adversarially trained models, and advviz.papers.protected makes "
                         "ResNet-20 ones only; use model='resnet20'")
    dev = torch.device(device) if device is not None else default_device()
    s = _setup(quick, seed, dev, progress, ds, model)
    res = _TABLE_FNS[table](s, n or 1000, seed)
    res["config"] = dict(res["config"], setup_seconds=round(s["setup_seconds"], 1))
    return res


def format(res: dict[str, Any]) -> str:
    """The result as a text table, the paper's values (same column) beside measured ones."""
    cifar = res["config"].get("dataset") == "cifar10"
    net = "ResNet-32" if "resnet32" in str(res["config"].get("target_model")) else "ResNet-20"
    col = f"CIFAR-10, {net}" if cifar else "MNIST, LeNet-5"
    titles = {"6": f"TSGAN paper, Table 6: targeted ASR ({col} column)",
              "7": "TSGAN paper, Table 7: targeted ASR against adversarially trained LeNet-5 (quick recipes)",
              "8": "TSGAN paper, Table 8: targeted ASR against adversarially trained ResNet-20 (CIFAR-10)"
                   + (" (quick recipes)" if res["config"].get("quick") else ""),
              "9": f"TSGAN paper, Table 9 analogue: transfer to another classifier ({col})",
              "10": f"TSGAN paper, Table 10: ASR with and without the content loss ({col})",
              "11": "TSGAN paper, Table 11: FID (real images / G_norm's outputs) and SSIM to G_norm(z) (MNIST)",
              "12": "TSGAN paper, Table 12: FID (real images / G_norm's outputs) and SSIM to G_norm(z) (CIFAR-10)",
              "13": f"TSGAN paper, Table 13: seconds per 1,000 adversarial examples ({col})"}
    text = format_rows(res, title=titles.get(res["table"]))
    extra = [f"content network: {res['config'].get('content_network')}"]
    if "fid_features" in res["config"]:
        extra.append(f"FID features: {res['config']['fid_features']}")
    budget = res["config"].get("training_budget")
    if budget:
        extra.append("training budget (images x epochs): " + ", ".join(
            f"{k} {v['images']:,} x {v['epochs']}" for k, v in budget.items() if isinstance(v, dict)))
    final = res["config"].get("final_losses")
    if final:
        for key in ("tsgan", "tsgan_no_content", "advgan"):
            for t, losses in final.get(key, {}).items():
                shown = {k: v for k, v in losses.items() if k != "epoch"}
                extra.append(f"final losses, {key} (target {t}): "
                             + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
    drift = res["config"].get("semantic_drift")
    if drift:
        for key in ("tsgan", "tsgan_no_content"):
            for t, d in drift.get(key, {}).items():
                extra.append(f"semantic drift, {key} (target {t}; {drift['classifier']}): G_adv(z) -> target "
                             f"{d['g_adv_share']:.3f} vs G_norm(z) {d['g_norm_share']:.3f} (drift {d['drift']:+.3f})")
    return text + "\n" + "\n".join(extra)
