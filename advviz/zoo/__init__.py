"""The catalogue: the spec and the builder of every network advviz downloads or trains.

The artefact store (:mod:`advviz.artifacts`, a low layer) knows no entry; this package, which sits
above the training engine, the defenses and the generative models, registers them when the store
first looks a name up (the store's declared provider hook). Where a new trained or downloaded
network goes: a spec (typed recipe in :mod:`advviz.artifacts.recipes`, builder, upstream) in the
module of its family here.

* :mod:`advviz.zoo._common`: the ``"fit"`` builder (the zoo models of :mod:`advviz.models`),
  training summaries, seeded initialisation;
* :mod:`advviz.zoo.hub`: torchvision's ImageNet networks (VGG-16/19, Inception-v3, ResNets);
* :mod:`advviz.zoo.defenses`: perceptual network, purifier generators, GNR, denoisers, distillation;
* :mod:`advviz.zoo.papers`: the paper reproductions' classifiers and feature networks;
* :mod:`advviz.zoo.generators`: TSGAN's and AdvGAN's generators (registered on demand).
"""

from __future__ import annotations

from advviz.zoo import _common, defenses, generators, hub, papers  # noqa: F401  (each registers its entries)
from advviz.zoo._common import fit_summary, interrupted, seeded, test_accuracy
from advviz.zoo.hub import hub_name
from advviz.zoo.papers import protected_name, robust_lenet_name

__all__ = ["fit_summary", "interrupted", "seeded", "test_accuracy", "hub_name", "protected_name", "robust_lenet_name",
           "defenses", "generators", "hub", "papers"]
