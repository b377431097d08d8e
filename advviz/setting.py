"""Which setting a walkthrough runs: the paper's (CIFAR-10 + a ResNet) or the offline default.

Every walkthrough notebook starts with :func:`choose`. It loads the paper's dataset and model
when this machine has them (``$ADVVIZ_DATA``, ``$ADVVIZ_WEIGHTS``, the user cache, or a download
when ``$ADVVIZ_OFFLINE`` is not set), and otherwise falls back to the offline default that always
works: scikit-learn's bundled digits (upsampled to 28x28) and the LeNet-5 advviz trains on them
on first use (8.9 s on a quiet 2-core CPU, 48.7 s on a busy one). :attr:`Setting.banner` says
which setting runs, and, for the fallback, what was missing and how to get the paper's setting. The choice is made in one place so
that every notebook behaves alike.

Per-setting constants live in the returned :class:`Setting`: ``eps`` is a budget that shows the
effect on that model (8/255 on CIFAR-10, as the papers use; 0.2 on digits, where LeNet-5 keeps
97% accuracy under PGD at 8/255, so a larger budget is needed to see anything).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from advviz import data, models

__all__ = ["Setting", "choose", "DIGITS_EPS", "CIFAR_EPS"]

CIFAR_EPS = 8 / 255
DIGITS_EPS = 0.2


@dataclass
class Setting:
    """The data and model a notebook runs on.

    Attributes:
        dataset: ``"cifar10"`` (the paper's setting) or ``"digits"`` (the offline fallback).
        model_name: the pretrained entry loaded (``"resnet20_cifar10"``, ``"lenet5_digits"``).
        model: that model, in eval mode, taking ``[0, 1]`` input.
        test: the dataset's test split, of ``(image (C, H, W) in [0, 1], label)``.
        eps: an L-infinity budget on the ``[0, 1]`` scale that visibly fools ``model``.
        missing: why the paper's setting could not be used (empty when it is used).
        extra: further models loaded by :func:`choose` (``also=``), by name.
    """

    dataset: str
    model_name: str
    model: nn.Module
    test: object
    eps: float
    missing: str = ""
    extra: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def paper(self) -> bool:
        """True when the paper's setting (CIFAR-10) runs."""
        return self.dataset == "cifar10"

    @property
    def channels(self) -> int:
        """Image channels: 3 for CIFAR-10, 1 for digits."""
        return 3 if self.paper else 1

    @property
    def description(self) -> str:
        """``"CIFAR-10 (JPEG copy) + resnet20_cifar10"`` or ``"digits + lenet5_digits"``."""
        data = "CIFAR-10" if self.paper else "digits (scikit-learn, 28x28)"
        return f"{data} + {self.model_name}"

    @property
    def banner(self) -> str:
        """Two or three lines for a notebook's first output: which setting, and how to get the paper's."""
        if self.paper:
            return f"Setting: the paper's, {self.description}; eps = {self.eps * 255:.0f}/255."
        return (f"Setting: the offline default, {self.description}; eps = {self.eps:g}.\n"
                f"The paper's setting (CIFAR-10 + ResNet) is not available here: {self.missing}\n"
                "To run it, set ADVVIZ_DATA to a folder holding cifar10-jpg/ (or cifar-10-batches-py/) and "
                "ADVVIZ_WEIGHTS to one holding resnet20-12fca82f.th and resnet32-d509ac18.th, or unset "
                "ADVVIZ_OFFLINE on a machine with a network to download them on first use; then restart the kernel.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".") + "."


def choose(model: str = "resnet20_cifar10", *, also: tuple[str, ...] = (), fallback: str = "lenet5_digits",
           prefer_paper: bool = True) -> Setting:
    """The paper's setting when its data and weights can be had, else the offline digits default.

    Args:
        model: the paper's pretrained CIFAR-10 model (``advviz.models.list_models(pretrained=True)``).
        also: further CIFAR-10 models the notebook needs (e.g. ``("resnet32_cifar10",)``); the
            paper's setting is used only when all of them load. On the fallback they are absent
            from :attr:`Setting.extra`.
        fallback: the digits model of the offline default (trained on first use).
        prefer_paper: ``False`` forces the offline default (tests, or a class without the data).

    Returns:
        The :class:`Setting`; its :attr:`~Setting.banner` is meant to be printed first.
    """
    missing = "the offline default was asked for (prefer_paper=False)."
    if prefer_paper:
        try:
            test = data.load("cifar10", "test")
            net = models.load(model)
            extra = {name: models.load(name) for name in also}
            return Setting("cifar10", model, net, test, CIFAR_EPS, extra=extra)
        except (data.DatasetNotFoundError, models.CheckpointError) as exc:
            missing = _first_line(exc)
    return Setting("digits", fallback, models.load(fallback), data.load("digits", "test"), DIGITS_EPS,
                   missing=missing)
