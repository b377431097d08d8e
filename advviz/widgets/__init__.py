"""Interactive components (ipywidgets 8) built on the core; they hold state and contain no math.

* :class:`ImagePicker` — dataset, split, class filter, index, upload; prediction.
* :class:`CFRView` — Grad-CAM overlay, CFR soft mask with a live τ slider, the CFR attack.
* :class:`FeatureMapView` — channel grids of any layer, clean beside adversarial.
* :class:`AttackLab` — any registered attack with controls built from its parameter specs, and
  the trajectory of the iterative ones (Play and a step slider marking where the prediction flips).
* :class:`PurifierLab` — any registered purifier applied live.
* :class:`TrainPanel` — (re)train a zoo model in a background thread with a live plot; "Use this
  model" makes the trained model the explorer's.
* :class:`TakeoverView` — where an attack takes over: feature divergence per layer, Grad-CAM
  of the true and the adversarial class.
* :class:`RobustnessView` — security curves of the model and of the model behind a purifier
  (oblivious or adaptive) by ``advviz.evaluate.robust_accuracy``, in the background with Stop; a
  point's broken images load into the picker, with the attacked version that broke them.
* :class:`Explorer` — all of them around one shared :class:`ExplorerState`, which holds the model as
  a unit (:class:`ModelInfo`): a zoo entry, a model trained in the Train tab, or your own
  ``nn.Module`` (``Explorer(module, classes=..., input_size=..., mean=..., std=...)``).

Errors raised in any callback are shown inside the component (:class:`ErrorArea`). The attack lab,
the Robustness and the Train tab run their work through one job runner (``advviz.widgets._jobs``):
a result whose model or image changed meanwhile is dropped with a message, ``wait()`` joins.
``python -m advviz.widgets.launch`` (or ``advviz explore``) opens the explorer notebook.
"""

from advviz.widgets._errors import REPORTED, ErrorArea, guarded
from advviz.widgets._state import (
    ExplorerState,
    ModelInfo,
    Prediction,
    available_datasets,
    available_models,
    default_pairing,
)
from advviz.widgets.attack_lab import AttackLab
from advviz.widgets.cfr import CFRView
from advviz.widgets.explorer import Explorer, fast_mode
from advviz.widgets.features import FeatureMapView
from advviz.widgets.generator import GeneratorView
from advviz.widgets.picker import ImagePicker
from advviz.widgets.purifier_lab import PurifierLab
from advviz.widgets.robustness import RobustnessView
from advviz.widgets.takeover import TakeoverView
from advviz.widgets.train_panel import TrainPanel
from advviz.widgets.twostream import TwoStreamState, TwoStreamView

__all__ = [
    "AttackLab",
    "CFRView",
    "ErrorArea",
    "Explorer",
    "ExplorerState",
    "FeatureMapView",
    "ModelInfo",
    "GeneratorView",
    "ImagePicker",
    "Prediction",
    "PurifierLab",
    "REPORTED",
    "RobustnessView",
    "TakeoverView",
    "TrainPanel",
    "TwoStreamState",
    "TwoStreamView",
    "available_datasets",
    "available_models",
    "default_pairing",
    "fast_mode",
    "guarded",
]
