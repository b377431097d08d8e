"""Reproduction of the TSGAN paper's experiments (paper 000: Liu et al., IEEE Access 2020).

``advviz reproduce tsgan --table T`` with T one of:

* ``6``: targeted ASR of FGSM, PGD-20, AdvGAN and TSGAN against LeNet-5 (MNIST column).
* ``7``: ASR against LeNet-5s adversarially trained with FGSM ("adv") and PGD ("iter") by
  :func:`advviz.train.adversarial_fit` (quick recipes :data:`AT_RECIPES`, labelled as such);
  TSGAN stage 2 and AdvGAN are retrained against each defended model. Quick mode only.
* ``9``: transfer — the same adversarial examples on a second classifier they were not trained
  against (advviz's slim VGG-16 trained on digits).
* ``10``: TSGAN with and without the content loss (ASR).
* ``11``: quality — FID and SSIM of TSGAN (with/without content) and AdvGAN against G_norm's
  outputs (Table 11; Table 12 is the CIFAR-10 version, not run here).
* ``13``: seconds to generate 1,000 adversarial examples.

Data and models: quick mode trains on the **digits** train split (scikit-learn's 8x8 digits
upsampled to 28x28, 1,437 images) against advviz's ``lenet5_digits`` and evaluates on the digits
test split (359 images) / 1,000 generated examples; the full mode uses the MNIST *test* split
split by :func:`advviz.data.holdout_split` (80% to train TSGAN, AdvGAN and a LeNet-5, 20% to
evaluate), since only MNIST's test split is available here, with Table 3's settings.

Attack settings (the paper gives none for FGSM/PGD): L-inf eps = 0.3 (MNIST's usual budget),
PGD 20 steps of alpha = 2.5 * eps / 20 from a random start. ASR is *targeted* for every method
(the fraction classified as the target, over test images whose label is not the target; for
TSGAN over generated images), the quantity TSGAN optimises; FGSM/PGD/AdvGAN also report
``asr_untargeted`` (untargeted attacks' fraction misclassified), closer to the paper's FGSM.
Quick mode attacks target class 0 only (the paper's figures use target 0); the full mode every
class. Trained generators are cached (``<cache>/tsgan/``) so later tables reuse them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from advviz.papers._common import format_rows, result

__all__ = ["PAPER", "TABLES", "format", "run"]

log = logging.getLogger(__name__)

TABLES = ("6", "7", "9", "10", "11", "13")

# Quick adversarially trained LeNet-5s for Table 7 (fine-tuned from lenet5_digits on the digits
# train split with advviz.train.adversarial_fit): "adv" = FGSM adversarial training (Goodfellow et
# al.: half clean, half FGSM loss), "iter" = iterative (PGD) adversarial training (Madry et al.).
AT_RECIPES: dict[str, dict[str, Any]] = {
    "adv": {"attack": "fgsm", "eps": 0.3, "clean_weight": 0.5, "epochs": 3, "lr": 1e-3, "batch_size": 64,
            "optimizer": "adam", "seed": 0},
    # eps 0.3 PGD training collapsed to a constant prediction (9.2% clean accuracy, measured); 0.1:
    "iter": {"attack": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 5, "epochs": 3, "lr": 1e-3, "batch_size": 64,
             "optimizer": "adam", "seed": 0},
}

# The paper's MNIST / LeNet-5 numbers (fractions; seconds for Table 13).
PAPER: dict[str, dict[str, dict[str, float]]] = {
    "6": {"fgsm": {"asr": 0.8263}, "pgd": {"asr": 0.9829}, "advgan": {"asr": 0.8866}, "tsgan": {"asr": 0.9531}},
    "7:adv": {"fgsm": {"asr": 0.1062}, "pgd": {"asr": 0.9498}, "advgan": {"asr": 0.1161}, "tsgan": {"asr": 0.4584}},
    "7:iter": {"fgsm": {"asr": 0.1423}, "pgd": {"asr": 0.1154}, "advgan": {"asr": 0.1002}, "tsgan": {"asr": 0.2310}},
    "11": {"tsgan_no_content": {"fid": 276.63, "ssim": 0.7863}, "tsgan": {"fid": 131.42, "ssim": 0.7878},
           "advgan": {"fid": 276.19, "ssim": 0.4772}},
    "13": {"fgsm": {"seconds_per_1000": 0.66}, "pgd": {"seconds_per_1000": 4.83},
           "advgan": {"seconds_per_1000": 0.036}, "tsgan": {"seconds_per_1000": 0.013}},
}
EPS = 0.3
PGD_STEPS = 20

_CACHE: dict[tuple[Any, ...], dict[str, Any]] = {}


def _setup(quick: bool, seed: int, device: torch.device, progress: bool = False) -> dict[str, Any]:
    """Train (or load from the cache) everything the tables share."""
    from advviz import data, models, train
    from advviz._paths import cache_dir
    from advviz.generative import advgan as A
    from advviz.generative import tsgan as T

    key = (quick, seed, str(device))
    if key in _CACHE:
        return _CACHE[key]
    t_start = time.perf_counter()
    if quick:
        cfg = T.CONFIGS["digits_quick"]
        acfg = A.ADVGAN_CONFIGS["digits_quick"]
        x_tr, y_tr = data.load("digits", "train").tensors()
        x_te, y_te = data.load("digits", "test").tensors()
        target_model = models.load("lenet5_digits", device=device)
        data_desc = ("digits (scikit-learn, 28x28): train split (1,437) to train the GANs, test split (359) "
                     "to attack; target model lenet5_digits")
        targets = [0]
        content_ds = "digits"
    else:
        cfg = T.CONFIGS["mnist"]
        acfg = A.ADVGAN_CONFIGS["mnist"]
        tr, te = data.holdout_split(data.load("mnist", "test"), 0.2, seed=0)
        x_tr, y_tr = tr.tensors()
        x_te, y_te = te.tensors()
        target_model = models.create("lenet5")
        train.fit(target_model, (x_tr, y_tr), **train.RECIPES["lenet5_digits"], device=device, progress=progress)
        target_model.eval()
        data_desc = ("MNIST test split divided by holdout_split(0.2, seed=0): 8,000 images train the GANs and a "
                     "LeNet-5 (lenet5_digits recipe), 2,000 held-out images are attacked")
        targets = list(range(10))
        content_ds = "mnist"
    content = T.content_network(content_ds, device=device)
    folder = cache_dir() / "tsgan"
    stem = f"{cfg.name}_seed{seed}_t{'-'.join(map(str, targets))}"
    gan_path, nc_path = folder / f"{stem}.safetensors", folder / f"{stem}_nocontent.safetensors"
    if gan_path.is_file() and nc_path.is_file():
        gan, gan_nc = T.TSGAN.load(gan_path, device=device), T.TSGAN.load(nc_path, device=device)
    else:
        gan = T.TSGAN(cfg, tuple(x_tr.shape[1:])).to(device)
        gan.fit_normal(x_tr, device=device, seed=seed, progress=progress)
        gan_nc = T.TSGAN(cfg.replace(lambda_content=0.0), tuple(x_tr.shape[1:])).to(device)
        gan_nc.g_norm.load_state_dict(gan.g_norm.state_dict())
        gan_nc.critic.load_state_dict(gan.critic.state_dict())
        gan_nc.epochs_done["normal"] = gan.epochs_done["normal"]
        gan.fit_adversarial(x_tr, target_model, targets, content=content, device=device, seed=seed, progress=progress)
        gan_nc.fit_adversarial(x_tr, target_model, targets, content=None, device=device, seed=seed, progress=progress)
        gan.info["target_model"] = gan_nc.info["target_model"] = "lenet5_digits" if quick else "lenet5 (mnist part)"
        gan.save(gan_path)
        gan_nc.save(nc_path)
    advgans = {}
    for t in targets:
        path = folder / f"advgan_{acfg.name}_seed{seed}_t{t}.safetensors"
        if path.is_file():
            advgans[t] = A.AdvGAN.load(path, device=device)
        else:
            advgans[t] = A.AdvGAN(acfg, tuple(x_tr.shape[1:]), target=t).to(device)
            advgans[t].fit(x_tr, y_tr, target_model, device=device, seed=seed, progress=progress)
            advgans[t].save(path)
    config = {"quick": quick, "seed": seed, "tsgan_config": cfg.__dict__ | {"betas": list(cfg.betas)},
              "advgan_config": acfg.__dict__, "targets": targets, "content_network": content.name,
              "fgsm": {"eps": EPS}, "pgd": {"eps": EPS, "alpha": 2.5 * EPS / PGD_STEPS, "steps": PGD_STEPS},
              "tsgan_epochs_done": gan.epochs_done, "target_model": gan.info.get("target_model")}
    out = {"cfg": cfg, "gan": gan, "gan_nc": gan_nc, "advgans": advgans, "target_model": target_model,
           "content": content, "x_te": x_te.to(device), "y_te": y_te.to(device), "targets": targets,
           "data": data_desc, "config": config, "setup_seconds": time.perf_counter() - t_start}
    _CACHE[key] = out
    return out


def _paper(table: str, attack: str, metric: str) -> dict[str, float]:
    v = PAPER.get(table, {}).get(attack, {}).get(metric)
    return {f"paper_{metric}": v} if v is not None else {}


def _targeted_images(s: dict[str, Any], t: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep = s["y_te"] != t
    return s["x_te"][keep][:n], s["y_te"][keep][:n]


def _asr_rows(s: dict[str, Any], n: int, seed: int, table: str, model: torch.nn.Module, model_name: str,
              attacks: tuple[str, ...]) -> list[dict[str, Any]]:
    from advviz import attacks as atk
    from advviz import metrics

    tm = s["target_model"]
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
                    x_adv = atk.fgsm(tm, x, tgt, eps=EPS, targeted=True)
                    x_un = atk.fgsm(tm, x, y, eps=EPS)
                elif a == "pgd":
                    kw = {"eps": EPS, "alpha": 2.5 * EPS / PGD_STEPS, "steps": PGD_STEPS, "seed": seed}
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
        row.update(_paper(table, a, "asr"))
        rows.append(row)
    return rows


def table6(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    rows = _asr_rows(s, n, seed, "6", s["target_model"], "lenet5", ("fgsm", "pgd", "advgan", "tsgan"))
    return result("tsgan", "6", s["config"], s["data"], rows)


def _robust_lenet(s: dict[str, Any], kind: str) -> tuple[torch.nn.Module, float]:
    from advviz import data, models, train
    from advviz._paths import cache_dir
    from advviz.models import load_state_file, save_weights

    path = cache_dir() / "tsgan" / f"lenet5_digits_{kind}_quick.safetensors"
    dev = s["x_te"].device
    model = models.load("lenet5_digits", device=dev)
    if path.is_file():
        model.load_state_dict(load_state_file(path))
    else:
        model.train()
        train.adversarial_fit(model, data.load("digits", "train").tensors(), **AT_RECIPES[kind], device=dev,
                              progress=False)
        save_weights(model, path, metadata={"recipe": AT_RECIPES[kind], "base": "lenet5_digits"})
    model.eval()
    with torch.no_grad():
        acc = float((model(s["x_te"]).argmax(1) == s["y_te"]).float().mean())
    return model, acc


def table7(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    """ASR against adversarially trained LeNet-5s; TSGAN's and AdvGAN's stage 2 / training is redone
    against each defended model (TSGAN reuses stage 1)."""
    from advviz._paths import cache_dir
    from advviz.generative import advgan as A
    from advviz.generative import tsgan as T

    if not s["config"]["quick"]:
        raise ValueError("Table 7 is implemented for --quick (digits) only")
    rows, accs = [], {}
    for kind in ("adv", "iter"):
        model, accs[kind] = _robust_lenet(s, kind)
        dev = s["x_te"].device
        sub = dict(s, target_model=model)
        folder = cache_dir() / "tsgan"
        gpath = folder / f"{s['cfg'].name}_seed{seed}_t0_vs_{kind}.safetensors"
        if gpath.is_file():
            gan = T.TSGAN.load(gpath, device=dev)
        else:
            gan = T.TSGAN(s["cfg"], s["gan"].image_shape).to(dev)
            gan.g_norm.load_state_dict(s["gan"].g_norm.state_dict())
            gan.critic.load_state_dict(s["gan"].critic.state_dict())
            gan.epochs_done["normal"] = s["gan"].epochs_done["normal"]
            from advviz import data

            x_tr, y_tr = data.load("digits", "train").tensors()
            gan.fit_adversarial(x_tr, model, s["targets"], content=s["content"], device=dev, seed=seed, progress=False)
            gan.save(gpath)
        advgans = {}
        for t in s["targets"]:
            apath = folder / f"advgan_{s['config']['advgan_config']['name']}_seed{seed}_t{t}_vs_{kind}.safetensors"
            if apath.is_file():
                advgans[t] = A.AdvGAN.load(apath, device=dev)
            else:
                from advviz import data

                x_tr, y_tr = data.load("digits", "train").tensors()
                advgans[t] = A.AdvGAN(A.ADVGAN_CONFIGS["digits_quick"], s["gan"].image_shape, target=t).to(dev)
                advgans[t].fit(x_tr, y_tr, model, device=dev, seed=seed, progress=False)
                advgans[t].save(apath)
        sub.update(gan=gan, advgans=advgans)
        for r in _asr_rows(sub, n, seed, "7", model, f"lenet5 ({kind}-trained, quick)",
                           ("fgsm", "pgd", "advgan", "tsgan")):
            r["defense"] = kind
            r.pop("paper_asr", None)
            r.update({f"paper_{k}": v for k, v in PAPER[f"7:{kind}"].get(r["attack"], {}).items()})
            rows.append(r)
    cfg = dict(s["config"], at_recipes=AT_RECIPES, clean_accuracy={k: round(v, 4) for k, v in accs.items()},
               note="quick adversarial-training recipes (3 epochs fine-tuning on digits), far weaker than the paper's")
    return result("tsgan", "7", cfg, s["data"], rows)


def table9(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    from advviz.generative.tsgan import _slim_vgg16_digits

    other = _slim_vgg16_digits().to(s["x_te"].device)
    rows = _asr_rows(s, n, seed, "9", other, "vgg16slim_digits (transfer from lenet5)",
                     ("fgsm", "pgd", "advgan", "tsgan"))
    cfg = dict(s["config"], transfer_model="advviz slim VGG-16 trained on digits (SLIM_VGG_RECIPE)")
    return result("tsgan", "9", cfg, s["data"], rows)


def table10(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    rows = _asr_rows(s, n, seed, "10", s["target_model"], "lenet5", ("tsgan_no_content", "tsgan"))
    return result("tsgan", "10", s["config"], s["data"], rows)


def table11(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    from advviz import metrics
    from advviz.generative.fid import fid, fid_network

    net = fid_network(s["target_model"], fallback_name="lenet5 (the target model)")
    rows = []
    for a in ("tsgan_no_content", "tsgan", "advgan"):
        fids, ssims = [], []
        for t in s["targets"]:
            ref = s["gan"].generate(n, None, seed=seed)
            if a == "advgan":
                x, _ = _targeted_images(s, t, n)
                x_adv = s["advgans"][t].attack(x)
                fids.append(fid(x_adv, ref, net))
                ssims.append(float(metrics.ssim(x_adv, x)))
            else:
                gan = s["gan"] if a == "tsgan" else s["gan_nc"]
                x_adv = gan.generate(n, t, seed=seed)
                fids.append(fid(x_adv, ref, net))
                ssims.append(float(metrics.ssim(x_adv, ref)))
        row = {"table": "11", "attack": a, "model": "lenet5", "fid": sum(fids) / len(fids),
               "ssim": sum(ssims) / len(ssims)}
        row.update(_paper("11", a, "fid"))
        row.update(_paper("11", a, "ssim"))
        rows.append(row)
    cfg = dict(s["config"], fid_features=net.name,
               ssim_reference="TSGAN: G_adv(z) against G_norm(z) for the same z; AdvGAN: x_adv against its input x "
                              "(no G_norm counterpart); FID of every method against G_norm's outputs")
    return result("tsgan", "11", cfg, s["data"], rows)


def table13(s: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    from advviz import attacks as atk

    tm = s["target_model"]
    t = s["targets"][0]
    n_time = 1000
    x = s["x_te"]
    reps = -(-n_time // x.shape[0])
    x = x.repeat(reps, 1, 1, 1)[:n_time]
    tgt = torch.full((n_time,), t, dtype=torch.long, device=x.device)
    fns = {
        "fgsm": lambda: atk.fgsm(tm, x, tgt, eps=EPS, targeted=True),
        "pgd": lambda: atk.pgd(tm, x, tgt, eps=EPS, alpha=2.5 * EPS / PGD_STEPS, steps=PGD_STEPS, targeted=True),
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
        row = {"table": "13", "attack": a, "model": "lenet5", "seconds_per_1000": min(times)}
        row.update(_paper("13", a, "seconds_per_1000"))
        rows.append(row)
    cfg = dict(s["config"], timing=f"best of 3 runs after a warm-up, 1,000 images, {x.device.type}, "
                                  f"torch threads {torch.get_num_threads()}; the paper: an RTX 2080 GPU")
    return result("tsgan", "13", cfg, s["data"], rows)


def run(*, table: str | None = None, quick: bool = False, n: int | None = None, seed: int = 0,
        device: str | torch.device | None = None, progress: bool = False) -> dict[str, Any]:
    """Run one of the paper's experiments (default Table 6) and return the JSON-ready result.

    Args:
        table: one of ``TABLES``.
        quick: digits + LeNet-5, target 0, the ``digits_quick`` configurations (the first call
            trains the generators: about 1.5 minutes on one free CPU core; later tables reuse
            them from the cache).
        n: attacked / generated images per target (default 1,000, capped by the test images
            for FGSM/PGD/AdvGAN).
        seed: training and noise seed.
        device: default CUDA when available.
        progress: show training progress bars.
    """
    from advviz.train import default_device

    table = table or "6"
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r} for the TSGAN paper; choose one of {', '.join(TABLES)} "
                         "(Tables 8 and 12, the CIFAR-10 ones, are not reproduced yet)")
    dev = torch.device(device) if device is not None else default_device()
    s = _setup(quick, seed, dev, progress)
    fn = {"6": table6, "7": table7, "9": table9, "10": table10, "11": table11, "13": table13}[table]
    res = fn(s, n or 1000, seed)
    res["config"] = dict(res["config"], setup_seconds=round(s["setup_seconds"], 1))
    return res


def format(res: dict[str, Any]) -> str:
    """The result as a text table, paper values (MNIST, LeNet-5) beside measured ones."""
    titles = {"6": "TSGAN paper, Table 6: targeted ASR on LeNet-5 (paper: MNIST column)",
              "7": "TSGAN paper, Table 7: targeted ASR against adversarially trained LeNet-5 (quick recipes)",
              "9": "TSGAN paper, Table 9 analogue: transfer of LeNet-5-trained examples to another classifier",
              "10": "TSGAN paper, Table 10: ASR with and without the content loss",
              "11": "TSGAN paper, Table 11: FID and SSIM against G_norm's outputs",
              "13": "TSGAN paper, Table 13: seconds per 1,000 adversarial examples"}
    text = format_rows(res, title=titles.get(res["table"]))
    extra = [f"content network: {res['config'].get('content_network')}"]
    if "fid_features" in res["config"]:
        extra.append(f"FID features: {res['config']['fid_features']}")
    return text + "\n" + "\n".join(extra)
