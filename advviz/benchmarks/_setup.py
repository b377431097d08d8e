"""What the side-by-side benchmarks share: the thread count, ResNet-20 and its CIFAR-10 sample."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from advviz import data, models

__all__ = ["resnet20_sample"]


@contextlib.contextmanager
def resnet20_sample(*, n: int, device: str | torch.device = "cpu", seed: int = 0, threads: int | None = None
                    ) -> Iterator[tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.device]]:
    """Set the threads, load ResNet-20 and ``n`` CIFAR-10 test images it classifies correctly.

    Args:
        n: number of images (:func:`advviz.data.sample` with ``model=``, seeded with ``seed``).
        device: where the model and images go.
        seed: seeds the sample.
        threads: ``torch.set_num_threads`` inside the block (restored afterwards); default
            ``$ADVVIZ_BENCH_THREADS`` if set, else unchanged. On a machine shared with other
            jobs, 1 thread avoids OpenMP spin-waiting (several times faster for every library).

    Yields:
        ``(model, x (n, 3, 32, 32) in [0, 1], y (n,), device)``.
    """
    old = torch.get_num_threads()
    if threads is None and os.environ.get("ADVVIZ_BENCH_THREADS"):
        threads = int(os.environ["ADVVIZ_BENCH_THREADS"])
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        dev = torch.device(device)
        model = models.load("resnet20_cifar10", device=dev)
        x, y = data.sample(data.load("cifar10", "test"), n, seed=seed, model=model, device=dev)
        yield model, x.to(dev), y.to(dev), dev
    finally:
        torch.set_num_threads(old)
