"""Training and evaluation: the one training engine, ``fit``, ``evaluate``, adversarial training.

:func:`fit_steps` (:mod:`advviz.train.engine`) is the one training loop of advviz; :func:`fit`
(classifiers, and through its ``loss`` argument adversarial training, distillation and the
denoisers) and the GAN and purifier trainers (pix2pix/cGAN, GNR, AdvGAN, both TSGAN stages) are
steps plugged into it (:class:`Step`: two optimisers, ``n_critic`` critic steps per generator step
and per-step loss dicts are the step's business). What they all share:

* a tqdm.auto progress bar (terminal and notebook), a per-epoch history;
* one seeding approach: epoch ``e`` of a run with ``seed`` draws everything (data order, noise,
  augmentation, dropout) from ``seed * 100_003 + e``, so a resumed run sees what an
  uninterrupted one would, and the caller's random state is left alone;
* one checkpoint format (:mod:`advviz.train.checkpoints`), written after every complete epoch:
  ``<checkpoint>.safetensors`` (module and optimizer tensors) plus ``<checkpoint>.json`` (epoch,
  history, the run's configuration, optimizer hyper-parameters, the caller's extra metadata), both
  written atomically; a checkpoint resumes only a run of the same configuration;
* Ctrl-C (``KeyboardInterrupt``) or a callback's ``state.request_stop()`` stops cleanly: the
  networks and optimizers are left with the state of the last *complete* epoch (which is also
  what the checkpoint holds), and the result says ``interrupted=True``.

``fit``'s device is CUDA when available, unless given. Under ``torchrun`` (N processes),
``fit`` trains with DistributedDataParallel: every process draws the same global batch order,
each takes its contiguous share of every global batch of ``batch_size`` images, and DDP averages
the gradients (weighted so that the step equals one process's step on the whole batch;
BatchNorm statistics stay per process). Only rank 0 shows progress and writes checkpoints; a
stopped or killed run keeps the last complete epoch's checkpoint, from which every rank resumes.

The WGAN-GP penalty lives with the GANs (:func:`advviz.generative.wgan.gradient_penalty`), the
CIFAR augmentation with the data (:func:`advviz.data.cifar_augment`).
"""

from __future__ import annotations

from advviz.train.adversarial import ADV_ATTACKS, adversarial_examples, adversarial_fit, adversarial_loss
from advviz.train.checkpoints import CHECKPOINT_FORMAT, ConfigMismatch, read_checkpoint
from advviz.train.engine import (
    Callback,
    FitResult,
    Step,
    TrainState,
    batches,
    default_device,
    epoch_callback,
    fit_steps,
    plateaued,
)
from advviz.train.fit import evaluate, fit, predict

__all__ = [
    "fit",
    "fit_steps",
    "Step",
    "epoch_callback",
    "read_checkpoint",
    "CHECKPOINT_FORMAT",
    "ConfigMismatch",
    "evaluate",
    "predict",
    "FitResult",
    "TrainState",
    "Callback",
    "default_device",
    "batches",
    "plateaued",
    "ADV_ATTACKS",
    "adversarial_examples",
    "adversarial_fit",
    "adversarial_loss",
]
