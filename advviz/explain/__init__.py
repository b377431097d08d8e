"""Explanations and views: Grad-CAM and the CFR mask, feature maps, perturbations, plots.

* :func:`gradcam` ``(model, x, target=None, layer=None) -> (B, 1, H, W)`` in ``[0, 1]``
  (captum's ``LayerGradCam`` with ReLU, computed directly for speed and checked against
  captum; :func:`gradcam_result` also returns the raw map, weights, targets and logits).
* :func:`cfr_mask` ``(cam, tau) -> (B, 1, H, W)``: the CFR paper's soft mask, eq. (6);
  :func:`cfr_binary` (eq. 1) and :func:`occlude` (the paper's Adv-CFR / Adv-non-CFR images).
* :func:`feature_maps` ``(model, x, layers=None, *, preset=None) -> {name: tensor}``, presets
  :data:`VGG16_BLOCKS` (TSGAN Fig. 1) and :func:`vgg19_layers` (purifier paper Fig. 5).
* :func:`perturbation_magnitude`, :func:`signed_perturbation`, :func:`amplify`.
* :func:`feature_divergence` ``(model, x, x_adv) -> {layer: (B,)}``: where an attack takes over,
  ``||f_l(x_adv) - f_l(x)|| / ||f_l(x)||`` per layer.
* :func:`capture_layers`: THE forward-hook capture (named layers' outputs or inputs during one
  forward pass, optionally with their graph, optionally stopping the pass early); everything above,
  the widgets' layer menus, the purifier's perceptual loss and FID use it.
* Plot helpers (matplotlib and ``plotly_*``) in :mod:`advviz.explain.plot`.

Heavy plotting libraries are imported only when a plot helper runs.
"""

from advviz.explain._capture import Capture, capture_layers
from advviz.explain.divergence import divergence_layers, feature_divergence
from advviz.explain.features import (
    PRESETS,
    VGG16_BLOCKS,
    feature_maps,
    preset_layers,
    stage_layers,
    vgg19_layers,
    vgg_block_layers,
)
from advviz.explain.gradcam import (
    MIN_CAM_SIZE,
    GradCAMResult,
    cfr_binary,
    cfr_mask,
    gradcam,
    gradcam_result,
    occlude,
    resolve_layer,
)
from advviz.explain.perturbation import (
    amplify,
    perturbation_magnitude,
    signed_perturbation,
)
from advviz.explain.plot import (
    feature_map_grid,
    overlay_heatmap,
    perturbation_heatmap,
    plotly_feature_grid,
    plotly_heatmap,
    plotly_image,
    plotly_overlay,
    plotly_perturbation_heatmap,
    show_image,
    show_mask,
)

__all__ = [
    "MIN_CAM_SIZE",
    "PRESETS",
    "VGG16_BLOCKS",
    "Capture",
    "GradCAMResult",
    "amplify",
    "capture_layers",
    "cfr_binary",
    "cfr_mask",
    "divergence_layers",
    "feature_divergence",
    "feature_map_grid",
    "feature_maps",
    "gradcam",
    "gradcam_result",
    "occlude",
    "overlay_heatmap",
    "perturbation_heatmap",
    "perturbation_magnitude",
    "plotly_feature_grid",
    "plotly_heatmap",
    "plotly_image",
    "plotly_overlay",
    "plotly_perturbation_heatmap",
    "preset_layers",
    "resolve_layer",
    "show_image",
    "show_mask",
    "signed_perturbation",
    "stage_layers",
    "vgg19_layers",
    "vgg_block_layers",
]
