"""What the side-by-side benchmarks share: the thread count, a model (ResNet-20 by default) and a
sample of test images it classifies correctly."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from advviz import artifacts, data, models

__all__ = ["model_sample", "resnet20_sample"]


@contextlib.contextmanager
def model_sample(name: str = "resnet20_cifar10", *, n: int, device: str | torch.device = "cpu", seed: int = 0,
                 threads: int | None = None, judge: torch.nn.Module | None = None,
                 ) -> Iterator[tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.device]]:
    """Set the threads, load pretrained model ``name`` and ``n`` test images of its dataset it
    classifies correctly.

    Args:
        name: a pretrained entry (:func:`advviz.models.list_models` with ``pretrained=True``, or any
            classifier artefact of the store, e.g. ``resnet20_cifar10_pgd_at_quick``).
        n: number of images (:func:`advviz.data.sample` with ``model=``, seeded with ``seed``).
        device: where the model and images go.
        seed: seeds the sample.
        threads: ``torch.set_num_threads`` inside the block (restored afterwards); default
            ``$ADVVIZ_BENCH_THREADS`` if set, else unchanged. On a machine shared with other
            jobs, 1 thread avoids OpenMP spin-waiting (several times faster for every library).
        judge: a callable ``model -> model`` whose result must classify the sample correctly too
            (e.g. a defense around the model); default the model itself.

    Yields:
        ``(model, x (n, C, H, W) in [0, 1], y (n,), device)``.
    """
    old = torch.get_num_threads()
    if threads is None and os.environ.get("ADVVIZ_BENCH_THREADS"):
        threads = int(os.environ["ADVVIZ_BENCH_THREADS"])
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        dev = torch.device(device)
        if name in models.list_models(True):
            model, dataset = models.load(name, device=dev), models.get_weights_spec(name).dataset
        else:  # a classifier the store makes (e.g. resnet20_cifar10_pgd_at_quick); unknown names: KeyError
            spec = artifacts.get_spec(name)
            if spec.kind != "classifier":
                raise ValueError(f"{name!r} is a {spec.kind}, not a classifier: benchmark a pretrained model or a "
                                 "classifier artefact")
            model, dataset = artifacts.fresh(name, device=dev).eval(), spec.dataset
        keep = [model] if judge is None else [model, judge(model)]
        x, y = data.sample(data.load(dataset, "test"), n, seed=seed, model=keep, device=dev)
        yield model, x.to(dev), y.to(dev), dev
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def resnet20_sample(*, n: int, device: str | torch.device = "cpu", seed: int = 0, threads: int | None = None
                    ) -> Iterator[tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.device]]:
    """:func:`model_sample` of ResNet-20 (``resnet20_cifar10``) on CIFAR-10."""
    with model_sample("resnet20_cifar10", n=n, device=device, seed=seed, threads=threads) as out:
        yield out
