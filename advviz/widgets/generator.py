"""GeneratorView: draw noise, pick the target class, see G_norm(z) beside G_adv(z) (TSGAN)."""

from __future__ import annotations

from typing import Any

import ipywidgets as W
import numpy as np
import torch
from torch import nn

from advviz import metrics
from advviz._modules import module_device
from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded

__all__ = ["GeneratorView"]


class GeneratorView(W.VBox):
    """A TSGAN generator view.

    Controls: the noise seed (and a "new z" button), the target class (only classes with a
    trained ``G_adv``). Shows ``G_norm(z)``, ``G_adv(z)`` and ``|G_adv(z) - G_norm(z)|`` (colour
    map, scaled to its maximum, printed below), each with the target model's prediction and
    confidence. Holds no math: images come from :meth:`advviz.generative.TSGAN.generate`.

    Args:
        gan: a trained :class:`advviz.generative.tsgan.TSGAN` with at least one target.
        model: the target classifier.
        classes: class names (default ``"0"``, ``"1"``, ...).
        seed: initial noise seed.
    """

    def __init__(self, gan: Any, model: nn.Module, *, classes: list[str] | None = None, seed: int = 0) -> None:
        self.gan = gan
        self.model = model
        self.errors = ErrorArea()
        targets = gan.targets()
        self.classes = classes or [str(i) for i in range(gan.num_classes)]
        self.seed = W.IntText(value=seed, description="z seed", layout=W.Layout(width="180px"))
        self.new_z = W.Button(description="new z", tooltip="draw another noise vector")
        self.target = W.Dropdown(options=[(self.classes[t], t) for t in targets],
                                 value=targets[0] if targets else None, description="target")
        self.norm_img = W.Image(format="png")
        self.adv_img = W.Image(format="png")
        self.diff_img = W.Image(format="png")
        self.norm_caption, self.adv_caption, self.diff_caption = W.HTML(), W.HTML(), W.HTML()
        self.last: dict[str, Any] = {}
        self.new_z.on_click(self._on_new_z)
        self.seed.observe(self._on_change, names="value")
        self.target.observe(self._on_change, names="value")
        super().__init__(children=[
            W.HBox([self.seed, self.new_z, self.target]),
            W.HBox([W.VBox([W.HTML("<b>G_norm(z)</b> (stage 1)"), self.norm_img, self.norm_caption]),
                    W.VBox([W.HTML("<b>G_adv(z)</b> (stage 2)"), self.adv_img, self.adv_caption]),
                    W.VBox([W.HTML("<b>|G_adv(z) - G_norm(z)|</b>"), self.diff_img, self.diff_caption])]),
            self.errors,
        ])
        if not targets:
            self.errors.message("this TSGAN has no stage-2 generator yet: train one with fit_adversarial",
                                kind="warning")
        else:
            self.render()

    @guarded
    def _on_new_z(self, _button: Any = None) -> None:
        self.seed.value = int(self.seed.value) + 1

    @guarded
    def _on_change(self, _change: Any = None) -> None:
        self.render()

    def _predict(self, x: torch.Tensor) -> tuple[int, float]:
        p = torch.softmax(metrics.logits(self.model, x.to(module_device(self.model))), 1)[0].cpu()
        k = int(p.argmax())
        return k, float(p[k])

    def render(self) -> None:
        """Generate for the current seed and target and update the three images."""
        self.errors.clear()
        t = int(self.target.value)
        z = self.gan.latent(1, seed=int(self.seed.value))
        x_norm = self.gan.generate(1, None, z=z).cpu()
        x_adv = self.gan.generate(1, t, z=z).cpu()
        diff = (x_adv - x_norm).abs()[0].amax(0)
        pn, cn = self._predict(x_norm)
        pa, ca = self._predict(x_adv)
        self.norm_img.value = R.png(R.to_uint8(x_norm[0]))
        self.adv_img.value = R.png(R.to_uint8(x_adv[0]))
        self.diff_img.value = R.png(R.colorize(diff, "magma"))
        hit = "target reached" if pa == t else "target missed"
        self.norm_caption.value = f"prediction: <b>{self.classes[pn]}</b> ({cn:.0%})"
        self.adv_caption.value = f"prediction: <b>{self.classes[pa]}</b> ({ca:.0%}) — {hit}"
        l2 = float((x_adv - x_norm).flatten().norm())
        self.diff_caption.value = f"max {float(diff.max()):.3f}, L2 {l2:.3f}"
        self.last = {"target": t, "pred_norm": pn, "pred_adv": pa, "conf_norm": cn, "conf_adv": ca,
                     "linf": float(np.asarray(diff.max())), "l2": l2}
