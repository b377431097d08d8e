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

from advviz import attacks, data, distributed, metrics, models, train
from advviz.artifacts.recipes import LENET5_DIGITS

__all__ = ["run_demo", "demo_result", "run_train", "TrainInterrupted"]


class TrainInterrupted(KeyboardInterrupt):
    """``advviz train`` was stopped (Ctrl-C): what was kept and where is in the message."""


def demo_result(*, epochs: int | None = None, eps: float = 0.1, seed: int = 0, progress: bool = True) -> dict[str, float]:
    """Train LeNet-5 on digits, attack it; return the measured figures.

    Args:
        epochs: training epochs (default: the recipe :data:`advviz.artifacts.recipes.LENET5_DIGITS`).
        eps: L-infinity budget of FGSM and PGD-10 on the [0, 1] scale.
        seed: seed of training and attacks.
        progress: show the training progress bar.

    Returns:
        ``train_seconds``, ``clean_accuracy`` (digits test split, 359 images), ``n_attacked``
        (correctly classified test images), and per attack ``{name}_accuracy`` (accuracy on
        the attacked images) and ``{name}_asr``.
    """
    recipe = LENET5_DIGITS.fit_kwargs()
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
    """The ``advviz train`` subcommand: train ``args.model`` on ``args.data`` and save weights.

    Nothing is lost and nothing is silently reused:

    * the checkpoint pair beside ``--out`` (``<out stem>.ckpt.*``) is resumed only when it was
      written with this run's settings; otherwise the run stops with what differs (``--fresh``
      starts over);
    * ``--out`` is written atomically (a temporary file, then a rename) and only by a run that
      completed, or by an interrupted run that completed at least one epoch and would not
      replace an existing file; an interrupted run raises :class:`TrainInterrupted` (the CLI
      exits 130) saying what was kept.

    Raises:
        ValueError: bad arguments (the message says which and what to do).
        advviz.train.ConfigMismatch: the checkpoint was written with other settings.
        TrainInterrupted: Ctrl-C.
    """
    train_set = data.load(args.data, "train")
    try:
        test_set = data.load(args.data, "test")
    except FileNotFoundError:
        test_set = None
    c, h, w = train_set.image_shape
    kwargs = {"num_classes": len(train_set.classes)}
    if args.model.startswith(("lenet", "resnet", "vgg")):
        kwargs["in_channels"] = c
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError("--out must end in .safetensors")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = models.create(args.model, **kwargs)
    if tuple(model.input_size[1:]) != (h, w):
        raise ValueError(f"{args.model} expects {model.input_size[1]}x{model.input_size[2]} images; "
                         f"{args.data} has {h}x{w}")
    checkpoint = out.with_name(out.stem + ".ckpt")
    result = train.fit(
        model, train_set, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, val_data=test_set,
        device=args.device, seed=args.seed, checkpoint=checkpoint, optimizer=args.optimizer,
        schedule=None if args.schedule == "none" else args.schedule,
        augment=data.cifar_augment if args.augment else None, description=f"{args.model} on {args.data}",
        fresh=getattr(args, "fresh", False), config={"data": args.data, "arch_kwargs": kwargs},
    )
    if not distributed.is_main():  # under torchrun every rank holds the same weights; rank 0 writes them
        return ""
    metadata = {"arch": args.model, "dataset": args.data, "arch_kwargs": kwargs, "history": result.history,
                "epochs_completed": result.epochs_completed, "interrupted": result.interrupted}
    if result.interrupted:
        done = result.epochs_completed
        if done == 0:
            raise TrainInterrupted(f"interrupted before the first epoch completed: nothing was written to {out}")
        if out.exists():
            raise TrainInterrupted(
                f"interrupted after {done} complete epoch(s); {out} already exists and was left as it was. The "
                f"checkpoint {checkpoint}.* holds those epochs: rerun the same command to continue")
        models.save_weights(model, out, metadata=metadata)
        raise TrainInterrupted(f"interrupted after {done} complete epoch(s): wrote their weights to {out} "
                               f"(rerun the same command to continue training to {args.epochs} epochs)")
    models.save_weights(model, out, metadata=metadata)
    last = result.last
    lines = [f"saved {out} after {result.epochs_completed} epoch(s)"]
    if last:
        lines.append(f"last epoch: loss {last['loss']:.4f}, train accuracy {last['accuracy']:.4f}"
                     + (f", test accuracy {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""))
    lines.append(f"load it with advviz.models.load({args.model!r}, weights={str(out)!r}, "
                 + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")")
    return "\n".join(lines)
