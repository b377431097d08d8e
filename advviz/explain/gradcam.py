"""Grad-CAM (Selvaraju et al. 2017) and the CFR paper's soft mask (paper 002, section III-C).

With ``A`` the ``(K, u, v)`` output of a convolutional layer and ``Z_c`` the logit of class c:

* eq. (4): ``lambda_c^(k) = 1/(u v) * sum_pq dZ_c / dA_pq^(k)`` (channel weights);
* eq. (5): ``L_c = ReLU(sum_k lambda_c^(k) A^(k))`` (the class activation map);
* :func:`gradcam` upsamples ``L_c`` bilinearly to the input size and scales each map to
  ``[0, 1]`` by its maximum (an all-zero map stays zero);
* eq. (6), :func:`cfr_mask`: the soft mask ``L_y / sum L_y`` over the pixels with
  ``L_y >= tau`` (the contributing feature region, CFR), 0 elsewhere;
* eq. (1), :func:`cfr_binary`: the binary CFR ``M = [L_y >= tau]``; :func:`occlude` builds the
  paper's Fig. 2/3 images ("Adv-non-CFR" keeps the CFR, "Adv-CFR" blanks it).

Why a direct implementation beside captum
-----------------------------------------
The contract names captum's ``LayerGradCam`` (with ``relu_attributions=True``). Through captum,
the predicted-class default costs a second forward pass (captum does not return the logits),
the whole forward pass records an autograd graph (parameters require grad), and captum adds
its bookkeeping: on the 2-core CPU, one 32x32 ResNet-20 image took about three times as long
as the direct path (best of 300 runs: 10.5 ms against 3.6 ms; a plain forward pass 2.9 ms),
missing the ~5 ms budget of an interactive widget. The default
``backend="direct"`` therefore computes exactly eqs. (4)-(5) itself, in one forward pass:
the pass runs under ``torch.no_grad()`` up to the layer, a forward hook (through
:func:`~advviz.explain._capture.capture_layers`, the one hook capture) makes the layer's
output a gradient leaf and switches graph recording on for the rest of the network, and one
``torch.autograd.grad`` of the selected logits w.r.t. that output alone gives
``dZ_c / dA`` (no graph before the layer; parameters' ``requires_grad`` untouched and nothing
accumulated into ``.grad``). ``backend="captum"`` runs captum's ``LayerGradCam`` and is the
reference: ``tests/test_explain.py`` checks that both agree to 1e-6.

Computing once, re-thresholding often
-------------------------------------
:func:`gradcam` returns the upsampled map; :func:`cfr_mask` / :func:`cfr_binary` /
:func:`occlude` are pure tensor operations on it (tens of microseconds), so a widget computes
Grad-CAM once per image/model/layer and re-runs only the mask when the threshold moves.
:func:`gradcam_result` additionally returns the raw layer-resolution map, the channel weights,
the targets and the logits of the same forward pass, as a :class:`GradCAMResult` with
``mask(tau)`` / ``binary(tau)`` shortcuts. Nothing is cached behind the caller's back.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import nn

from advviz._checks import check_batch
from advviz._modules import check_model, model_guard
from advviz.explain._capture import capture_layers, get_module

__all__ = [
    "MIN_CAM_SIZE",
    "GradCAMResult",
    "cfr_binary",
    "cfr_mask",
    "gradcam",
    "gradcam_result",
    "occlude",
    "resolve_layer",
]

#: A layer whose output is at most ``MIN_CAM_SIZE`` x ``MIN_CAM_SIZE`` is refused by Grad-CAM:
#: upsampling four numbers or fewer to the image gives a blur, not a region.
MIN_CAM_SIZE = 2


# ---------------------------------------------------------------------------------------------
# the Grad-CAM layer (get_module, the name lookup, lives in _capture.py)
# ---------------------------------------------------------------------------------------------

def module_name(model: nn.Module, module: nn.Module) -> str:
    """The qualified name of ``module`` inside ``model`` (``""`` for the model itself)."""
    for name, m in model.named_modules():
        if m is module:
            return name
    raise ValueError(f"the given layer ({type(module).__name__}) is not a submodule of the model")


def resolve_layer(model: nn.Module, layer: str | nn.Module | None = None) -> tuple[str, nn.Module]:
    """The Grad-CAM layer as ``(name, module)``.

    Args:
        model: the classifier.
        layer: a module name (``"layer3"``, ``"features.relu5_3"``), a submodule, or ``None``
            for the default: ``model.last_conv`` for zoo models, else the last ``nn.Conv2d``.

    Raises:
        ValueError: unknown name, a module outside ``model``, or no default found.
    """
    if layer is None:
        default = getattr(model, "last_conv", None)
        if isinstance(default, str) and default:
            return default, get_module(model, default)
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError("the model has no `last_conv` attribute and no nn.Conv2d layer: "
                             "pass layer= (a module or its name) for Grad-CAM")
        return convs[-1]
    if isinstance(layer, str):
        return layer, get_module(model, layer)
    if isinstance(layer, nn.Module):
        return module_name(model, layer), layer
    raise TypeError(f"layer must be a module name, an nn.Module or None, got {type(layer).__name__}")


# ---------------------------------------------------------------------------------------------
# Grad-CAM
# ---------------------------------------------------------------------------------------------

@dataclass
class GradCAMResult:
    """Everything one Grad-CAM pass produces (all tensors detached, on ``x``'s device).

    Attributes:
        cam: ``(B, 1, H, W)`` in ``[0, 1]``: ``raw`` upsampled to the input size and divided by
            its per-image maximum (all-zero maps stay zero). What :func:`gradcam` returns.
        raw: ``(B, 1, u, v)``: eq. (5) ``L_c`` at the layer's resolution, unscaled.
        weights: ``(B, K)``: eq. (4) channel weights ``lambda_c^(k)``.
        target: ``(B,)`` int64: the class each map explains.
        logits: ``(B, num_classes)`` of the same forward pass (``None`` with captum).
        layer: the layer's module name.
    """

    cam: torch.Tensor
    raw: torch.Tensor
    weights: torch.Tensor | None
    target: torch.Tensor
    logits: torch.Tensor | None
    layer: str

    def mask(self, tau: float | torch.Tensor) -> torch.Tensor:
        """:func:`cfr_mask` of the cached ``cam`` (no recomputation)."""
        return cfr_mask(self.cam, tau)

    def binary(self, tau: float | torch.Tensor) -> torch.Tensor:
        """:func:`cfr_binary` of the cached ``cam`` (no recomputation)."""
        return cfr_binary(self.cam, tau)


class _LayerShapeError(Exception):
    """Raised from inside the forward hook to stop the forward pass at an unusable layer."""

    def __init__(self, shape: tuple[int, ...] | None) -> None:
        super().__init__(shape)
        self.shape = shape


def _spatial_candidates(model: nn.Module, x: torch.Tensor, stop_at: nn.Module, limit: int = 6) -> list[str]:
    """Modules run before ``stop_at`` whose output is a ``(B, K, h, w)`` map larger than 2x2.

    Latest first; modules returning the same tensor (a block and its last layer) are listed
    together. The forward pass stops when ``stop_at`` has run.
    """
    layers = {name: m for name, m in model.named_modules() if name and not _is_normalize(m)}
    stop = next((name for name, m in layers.items() if m is stop_at), False)
    # the very tensors (no copy, not even a detached view; no graph is recorded under no_grad), so
    # that modules returning the same tensor are grouped by identity
    cap = None
    try:
        with torch.no_grad(), capture_layers(model, layers, keep_graph=True, clone=False, every_call=True,
                                             stop=stop) as cap:
            model(x[:1])
    except Exception:  # noqa: BLE001, S110 - anything: the layers seen so far only word an error message
        pass
    seen: dict[int, list] = {}
    order: list[int] = []
    for name, t in cap.calls if cap is not None else ():
        if name == stop or t.ndim != 4 or max(t.shape[2:]) <= MIN_CAM_SIZE:
            continue
        key = id(t)  # every recorded tensor stays alive in cap.calls: ids stay unique
        if key not in seen:
            seen[key] = [[], tuple(t.shape[1:])]
            order.append(key)
        seen[key][0].append(name)
    out = []
    for key in reversed(order[-limit:]):
        names, shape = seen[key]
        out.append(f"{' = '.join(repr(n) for n in names)} ({shape[0]}x{shape[1]}x{shape[2]})")
    return out


def _is_normalize(m: nn.Module) -> bool:
    return type(m).__name__ == "Normalize"


def _refuse(model: nn.Module, module: nn.Module, x: torch.Tensor, name: str,
            shape: tuple[int, ...] | None) -> ValueError:
    cands = _spatial_candidates(model, x, module)
    listing = ("; earlier layers with larger maps (latest first): " + ", ".join(cands)) if cands else ""
    if shape is None or len(shape) != 4:
        what = "does not output a single tensor" if shape is None else f"outputs shape {shape}"
        return ValueError(f"Grad-CAM needs a convolutional layer with a (B, K, h, w) output; layer {name!r} "
                          f"{what}{listing}")
    return ValueError(f"layer {name!r} outputs {shape[2]}x{shape[3]} maps: at most {MIN_CAM_SIZE}x{MIN_CAM_SIZE}, "
                      f"too coarse for Grad-CAM (upsampling {shape[2] * shape[3]} values gives a blur); "
                      f"choose an earlier layer{listing}")


def _targets(target: int | Sequence[int] | torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    b, k = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    t = torch.as_tensor(target, device=logits.device)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {t.dtype}")
    t = t.to(torch.long)
    if t.ndim == 0:
        t = t.expand(b)
    if t.ndim != 1 or t.shape[0] != b:
        raise ValueError(f"target must be an int or have shape ({b},), got shape {tuple(t.shape)}")
    if bool(((t < 0) | (t >= k)).any()):
        raise ValueError(f"target holds a class outside [0, {k}): {t.tolist()}")
    return t


def _scale_to_unit(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    cam = F.interpolate(raw, size=size, mode="bilinear", align_corners=False) if raw.shape[2:] != size else raw
    peak = cam.amax(dim=(2, 3), keepdim=True)
    # cam >= 0, so a zero peak means a zero map: dividing by the clamped peak keeps it zero (no NaN)
    return cam / peak.clamp_min(torch.finfo(cam.dtype).tiny)


def _check_layer_output(_name: str, out: object) -> None:
    """Raise :class:`_LayerShapeError` unless ``out`` is a ``(B, K, u, v)`` map larger than 2x2."""
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or max(out.shape[2:]) <= MIN_CAM_SIZE:
        raise _LayerShapeError(tuple(out.shape) if isinstance(out, torch.Tensor) else None)


def _as_gradient_leaf(name: str, out: object) -> torch.Tensor:
    _check_layer_output(name, out)
    # From here on record the graph; before the layer nothing was recorded (no_grad), so
    # the backward pass runs from the logits to this output and no further.
    torch.set_grad_enabled(True)
    return out.detach().requires_grad_(True)  # the layer's output, replaced by this leaf


def _direct(model: nn.Module, module: nn.Module, name: str, x: torch.Tensor,
            target: int | Sequence[int] | torch.Tensor | None) -> GradCAMResult:
    try:
        # no_grad's exit restores the caller's grad mode after the hook's switch; the leaf is
        # recorded as is (keep_graph, no clone): the gradient is taken w.r.t. it
        with torch.no_grad(), capture_layers(model, {name: module}, keep_graph=True, clone=False,
                                             on_output=_as_gradient_leaf) as cap:
            logits = model(x)
    except _LayerShapeError as exc:
        raise _refuse(model, module, x, name, exc.shape) from None
    if cap.missing:
        raise ValueError(f"layer {name!r} was not called in the model's forward pass")
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError("Grad-CAM needs a model returning logits of shape (B, num_classes)")
    t = _targets(target, logits)
    act = cap.last[name]
    if not logits.requires_grad:
        raise ValueError(f"the model's output does not depend on layer {name!r}")
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), act)
    act = act.detach()
    weights = grad.mean(dim=(2, 3))                                           # eq. (4)
    raw = F.relu((weights[:, :, None, None] * act).sum(dim=1, keepdim=True))  # eq. (5)
    return GradCAMResult(cam=_scale_to_unit(raw, tuple(x.shape[2:])), raw=raw, weights=weights,
                         target=t, logits=logits.detach(), layer=name)


def _captum(model: nn.Module, module: nn.Module, name: str, x: torch.Tensor,
            target: int | Sequence[int] | torch.Tensor | None) -> GradCAMResult:
    try:
        with torch.no_grad(), capture_layers(model, {name: module}, clone=False, on_output=_check_layer_output):
            logits = model(x)
    except _LayerShapeError as exc:
        raise _refuse(model, module, x, name, exc.shape) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError("Grad-CAM needs a model returning logits of shape (B, num_classes)")
    t = _targets(target, logits)
    raw = LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True)
    raw = raw.detach()
    return GradCAMResult(cam=_scale_to_unit(raw, tuple(x.shape[2:])), raw=raw, weights=None,
                         target=t, logits=None, layer=name)


def gradcam_result(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None,
                   layer: str | nn.Module | None = None, *, backend: str = "direct") -> GradCAMResult:
    """Grad-CAM with its intermediate pieces; see :func:`gradcam` for the arguments.

    Returns:
        :class:`GradCAMResult` (``cam`` is what :func:`gradcam` returns).
    """
    check_model(model)
    check_batch(x)
    if backend not in ("direct", "captum"):
        raise ValueError(f"backend must be 'direct' or 'captum', got {backend!r}")
    name, module = resolve_layer(model, layer)
    x = x.detach()
    # inference_mode(False): usable from a caller's torch.inference_mode() block too
    with model_guard(model, freeze=False), torch.inference_mode(False):
        run = _direct if backend == "direct" else _captum
        return run(model, module, name, x, target)


def gradcam(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None,
            layer: str | nn.Module | None = None, *, backend: str = "direct") -> torch.Tensor:
    """Grad-CAM maps of ``x``, upsampled to the input size and scaled to ``[0, 1]`` per image.

    Computes eqs. (4)-(5) of the CFR paper (captum's ``LayerGradCam`` with
    ``relu_attributions=True``), upsamples bilinearly (``align_corners=False``) to ``(H, W)``
    and divides each map by its maximum; a map that is zero everywhere stays zero. The model
    runs in eval mode; its ``training`` flags, parameters' ``requires_grad`` flags and ``.grad``
    are left as they were and every hook is removed, also when the call raises.

    Args:
        model: classifier mapping ``(B, C, H, W)`` to logits ``(B, num_classes)``.
        x: images ``(B, C, H, W)`` (in ``[0, 1]`` for zoo models); the result is on its device.
        target: class to explain: ``None`` (the predicted class of each image), an int for all
            images, or a ``(B,)`` tensor / sequence of ints.
        layer: module name or submodule; default ``model.last_conv`` (zoo models), else the last
            ``nn.Conv2d``. Its output must be ``(B, K, u, v)`` with ``u`` or ``v`` above 2.
            A module called several times in one forward pass is explained at its last call.
        backend: ``"direct"`` (default: one forward pass and one ``autograd.grad``) or
            ``"captum"`` (captum's ``LayerGradCam``, the reference; same result to ~1e-7).

    Returns:
        ``(B, 1, H, W)`` tensor in ``[0, 1]``, detached, dtype of the model's output.

    Raises:
        ValueError: a layer with ``<= 2x2`` maps (the message lists earlier layers), a layer
            without a 4-D output, a bad ``target``, or a bad ``x``.
    """
    return gradcam_result(model, x, target, layer, backend=backend).cam


# ---------------------------------------------------------------------------------------------
# CFR masks
# ---------------------------------------------------------------------------------------------

def _check_cam(cam: torch.Tensor) -> None:
    if not isinstance(cam, torch.Tensor):
        raise TypeError(f"cam must be a torch.Tensor of shape (B, 1, H, W), got {type(cam).__name__}")
    if cam.ndim != 4 or cam.shape[1] != 1:
        raise ValueError(f"cam must have shape (B, 1, H, W) (as gradcam returns), got {tuple(cam.shape)}")
    if not cam.is_floating_point():
        raise ValueError(f"cam must be a float tensor, got dtype {cam.dtype}")


def _tau(tau: float | torch.Tensor, cam: torch.Tensor) -> float | torch.Tensor:
    if isinstance(tau, torch.Tensor) and tau.numel() > 1:
        if tau.ndim != 1 or tau.shape[0] != cam.shape[0]:
            raise ValueError(f"a tensor tau must have shape ({cam.shape[0]},), got {tuple(tau.shape)}")
        if bool(((tau < 0) | (tau > 1) | tau.isnan()).any()):
            raise ValueError(f"tau must lie in [0, 1] (Grad-CAM maps are scaled to [0, 1]), got {tau.tolist()}")
        return tau.to(device=cam.device, dtype=cam.dtype).view(-1, 1, 1, 1)
    t = float(tau)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"tau must lie in [0, 1] (Grad-CAM maps are scaled to [0, 1]), got {tau}")
    return t


def cfr_mask(cam: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """The soft mask of the CFR paper, eq. (6).

    ``M~(i, j) = L(i, j) / sum_{L(m, n) >= tau} L(m, n)`` where ``L(i, j) >= tau``, else 0: each
    image's mask sums to 1 over its contributing feature region. A pure tensor operation on a
    (cached) map; nothing is recomputed.

    Args:
        cam: ``(B, 1, H, W)`` non-negative maps, normally :func:`gradcam`'s output in ``[0, 1]``.
        tau: threshold in ``[0, 1]`` (the paper uses 0.2), or a ``(B,)`` tensor, one per image.

    Returns:
        ``(B, 1, H, W)``, same dtype and device as ``cam``; an image whose map is zero
        everywhere, or has nothing above ``tau``, gets an all-zero mask and a warning
        (never NaN).
    """
    _check_cam(cam)
    t = _tau(tau, cam)
    kept = torch.where(cam >= t, cam, torch.zeros((), dtype=cam.dtype, device=cam.device))
    total = kept.sum(dim=(2, 3), keepdim=True)
    empty = total <= 0
    if bool(empty.any()):
        idx = empty.flatten().nonzero().flatten().tolist()
        warnings.warn(f"cfr_mask: image(s) {idx} have no Grad-CAM mass at or above tau={tau}; "
                      "their masks are all zero (lower tau, or check the map and the target class)",
                      RuntimeWarning, stacklevel=2)
        return torch.where(empty, torch.zeros_like(kept), kept / torch.where(empty, torch.ones_like(total), total))
    return kept / total


def cfr_binary(cam: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """The binary contributing feature region ``M`` of the CFR paper's eq. (1): ``[cam >= tau]``.

    Args:
        cam: ``(B, 1, H, W)`` maps (normally :func:`gradcam`'s output).
        tau: threshold in ``[0, 1]`` or a ``(B,)`` tensor.

    Returns:
        ``(B, 1, H, W)`` of 0/1 in ``cam``'s dtype. (With ``tau = 0`` every pixel is in the
        region; the soft mask's support is this region minus the pixels where ``cam`` is 0.)
    """
    _check_cam(cam)
    return (cam >= _tau(tau, cam)).to(cam.dtype)


def occlude(x: torch.Tensor, cam: torch.Tensor, tau: float | torch.Tensor, keep: str = "cfr",
            *, fill: float = 0.0) -> torch.Tensor:
    """The CFR paper's Fig. 2/3 images: blank one side of the contributing feature region.

    Args:
        x: images ``(B, C, H, W)``.
        cam: their maps ``(B, 1, H, W)``.
        tau: threshold (the paper's Fig. 3 uses 0.2).
        keep: ``"cfr"``: keep the CFR, set the other pixels to ``fill`` (the paper's
            "Adv-non-CFR"); ``"non_cfr"``: set the CFR to ``fill`` (the paper's "Adv-CFR").
        fill: value of the blanked pixels (paper: 0).

    Returns:
        ``(B, C, H, W)`` like ``x``.
    """
    check_batch(x)
    _check_cam(cam)
    if cam.shape[0] != x.shape[0] or cam.shape[2:] != x.shape[2:]:
        raise ValueError(f"cam {tuple(cam.shape)} does not match x {tuple(x.shape)}: expected "
                         f"({x.shape[0]}, 1, {x.shape[2]}, {x.shape[3]})")
    if keep not in ("cfr", "non_cfr"):
        raise ValueError(f"keep must be 'cfr' (paper: Adv-non-CFR) or 'non_cfr' (paper: Adv-CFR), got {keep!r}")
    region = cfr_binary(cam.to(device=x.device), tau).bool()
    if keep == "non_cfr":
        region = ~region
    return torch.where(region, x, torch.full((), fill, dtype=x.dtype, device=x.device))

