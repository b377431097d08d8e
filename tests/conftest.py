"""Shared fixtures.

* The environment (offline, hermetic cache, data/weights defaults) is set by the repository's
  root ``conftest.py``, so that it applies to ``notebooks/`` (nbval) as well.
* ``device``: CPU by default; ``pytest --device cuda`` opts in to the GPU.
* Session-scoped models (``resnet20``, ``lenet_digits``) are shared: tests must not change
  them (attacks guarantee that; a test that trains makes its own copy).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def _have(path_var: str, rel: str) -> bool:
    base = os.environ.get(path_var)
    return bool(base) and (Path(base) / rel).exists()


requires_cifar = pytest.mark.skipif(not _have("ADVVIZ_DATA", "cifar10-jpg"),
                                    reason="CIFAR-10 not available (set ADVVIZ_DATA)")
requires_resnet = pytest.mark.skipif(not _have("ADVVIZ_WEIGHTS", "resnet20-12fca82f.th"),
                                     reason="ResNet-20 weights not available (set ADVVIZ_WEIGHTS)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("CUDA requested but not available")
    return torch.device(name)


@pytest.fixture(scope="session")
def cifar_test():
    from advviz import data

    if not _have("ADVVIZ_DATA", "cifar10-jpg"):
        pytest.skip("CIFAR-10 not available (set ADVVIZ_DATA)")
    return data.load("cifar10", "test")


@pytest.fixture(scope="session")
def resnet20(device):
    from advviz import models

    if not _have("ADVVIZ_WEIGHTS", "resnet20-12fca82f.th"):
        pytest.skip("ResNet-20 weights not available (set ADVVIZ_WEIGHTS)")
    return models.load("resnet20_cifar10", device=device)


@pytest.fixture(scope="session")
def cifar_correct(cifar_test, resnet20, device):
    """64 CIFAR-10 test images ResNet-20 classifies correctly (seed 0): ``(x, y)`` on ``device``."""
    from advviz import data

    x, y = data.sample(cifar_test, 64, seed=0, model=resnet20)
    return x.to(device), y.to(device)


@pytest.fixture(scope="session")
def lenet_digits(device):
    """LeNet-5 trained with advviz's recipe on the digits train split (cached per session)."""
    from advviz import models

    return models.load("lenet5_digits", device=device)


@pytest.fixture(scope="session")
def digits_test():
    from advviz import data

    return data.load("digits", "test")


@pytest.fixture
def one_thread():
    """Many small steps (GAN loops): on a shared 2-core machine one torch thread is much faster."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
