"""``advviz demo`` and ``advviz train``: small end-to-end runs that need no files and no network.

``run_demo`` trains LeNet-5 on the offline digits train split with the recorded recipe,
reports clean test accuracy, attacks the correctly classified test images with FGSM and
PGD, and returns a short text summary (the CLI prints it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

__all__ = ["run_demo", "demo_result", "run_train"]


def demo_result(*, epochs: int | None = None, eps: float = 0.1, seed: int = 0, progress: bool = True) -> dict[str, float]:
    """Train LeNet-5 on digits, attack it; return the measured figures.

    Args:
        epochs: training epochs (default: ``advviz.train.RECIPES["lenet5_digits"]``).
        eps: L-infinity budget of FGSM and PGD-10 on the [0, 1] scale.
        seed: seed of training and attacks.
        progress: show the training progress bar.

    Returns:
        ``train_seconds``, ``clean_accuracy`` (digits test split, 359 images), ``n_attacked``
        (correctly classified test images), and per attack ``{name}_accuracy`` (accuracy on
        the attacked images) and ``{name}_asr``.
    """
    from advviz import attacks, data, metrics, models, train

    recipe = dict(train.RECIPES["lenet5_digits"])
    if epochs is not None:
        recipe["epochs"] = epochs
    recipe["seed"] = seed
    train_set, test_set = data.load("digits", "train"), data.load("digits", "test")
    torch.manual_seed(seed)
    model = models.create("lenet5")
    t0 = time.perf_counter()
    train.fit(model, train_set, device="cpu", progress=progress, description="LeNet-5 on digits", **recipe)
    out: dict[str, float] = {"train_seconds": time.perf_counter() - t0,
                             "clean_accuracy": train.evaluate(model, test_set)}
    x, y = test_set.tensors()
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    out["n_attacked"] = float(len(y))
    for name, kw in (("fgsm", {"eps": eps}), ("pgd", {"eps": eps, "alpha": eps / 4, "steps": 10, "seed": seed})):
        x_adv = attacks.get(name)(model, x, y, **kw)
        out[f"{name}_accuracy"] = metrics.accuracy(model, x_adv, y)
        out[f"{name}_asr"] = metrics.asr(model, x_adv, y)
    return out


def run_demo(*, epochs: int | None = None, eps: float = 0.1, seed: int = 0) -> str:
    """Run :func:`demo_result` and format it as a few lines of text."""
    r = demo_result(epochs=epochs, eps=eps, seed=seed)
    n = int(r["n_attacked"])
    return "\n".join([
        "advviz demo: LeNet-5 on the offline digits data (scikit-learn, 1,438 train / 359 test images)",
        f"  trained in {r['train_seconds']:.1f} s; clean test accuracy {r['clean_accuracy']:.3f}",
        f"  attacks on the {n} correctly classified test images, L-inf eps = {eps:g} ({eps * 255:.1f}/255):",
        f"    FGSM      accuracy {r['fgsm_accuracy']:.3f}   attack success rate {r['fgsm_asr']:.3f}",
        f"    PGD-10    accuracy {r['pgd_accuracy']:.3f}   attack success rate {r['pgd_asr']:.3f}",
        "  next: `python3 run.py explore` opens the interactive explorer",
    ])


def run_train(args: argparse.Namespace) -> str:
    """The ``advviz train`` subcommand: train ``args.model`` on ``args.data`` and save weights."""
    from advviz import data, models, train

    train_set = data.load(args.data, "train")
    try:
        test_set = data.load(args.data, "test")
    except FileNotFoundError:
        test_set = None
    c, h, w = train_set.image_shape
    kwargs = {"num_classes": len(train_set.classes)}
    if args.model.startswith(("lenet", "resnet", "vgg")):
        kwargs["in_channels"] = c
    torch.manual_seed(args.seed)
    model = models.create(args.model, **kwargs)
    if tuple(model.input_size[1:]) != (h, w):
        raise ValueError(f"{args.model} expects {model.input_size[1]}x{model.input_size[2]} images; "
                         f"{args.data} has {h}x{w}")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError("--out must end in .safetensors")
    result = train.fit(
        model, train_set, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, val_data=test_set,
        device=args.device, seed=args.seed, checkpoint=out.with_name(out.stem + ".ckpt"),
        optimizer=args.optimizer, schedule=None if args.schedule == "none" else args.schedule,
        augment=train.cifar_augment if args.augment else None, description=f"{args.model} on {args.data}",
    )
    from advviz import distributed

    if not distributed.is_main():  # under torchrun every rank holds the same weights; rank 0 writes them
        return ""
    models.save_weights(model, out, metadata={"arch": args.model, "dataset": args.data, "arch_kwargs": kwargs,
                                              "history": result.history})
    last = result.last
    lines = [f"saved {out} after {result.epochs_completed} epoch(s){' (interrupted)' if result.interrupted else ''}"]
    if last:
        lines.append(f"last epoch: loss {last['loss']:.4f}, train accuracy {last['accuracy']:.4f}"
                     + (f", test accuracy {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""))
    lines.append(f"load it with advviz.models.load({args.model!r}, weights={str(out)!r}, "
                 + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")")
    return "\n".join(lines)
