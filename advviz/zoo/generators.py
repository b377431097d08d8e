"""TSGAN's and AdvGAN's generators as artefacts (the TSGAN paper's reproduction).

Their names say what they are made from (configuration, seed, targets, target model, content
network), and their recipes carry the identity of every input: the training images' sha256, and
each input network either as an artefact (whose identity then enters the generator's) or by the
sha256 of its weights. They are registered on demand (:func:`tsgan_stage1`, :func:`tsgan_stage2`,
:func:`advgan_for`): a spec made from other inputs takes the old one's place. Their in-memory
inputs (the training images, a hand-made stage 1 or target) reach the builders as the store's
build inputs (:attr:`advviz.artifacts.BuildContext.inputs`), never through module state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

import torch

from advviz import artifacts
from advviz._weights import load_state_file, read_metadata
from advviz.artifacts import ArtifactSpec, BuildContext, Built
from advviz.artifacts.recipes import AdvGANRecipe, TSGANRecipe
from advviz.generative import advgan as A
from advviz.generative import tsgan as T
from advviz.zoo._common import interrupted, seeded

__all__ = ["tsgan_stage1", "tsgan_stage2", "advgan_for", "tensors_identity", "last_epoch"]


def tensors_identity(*tensors: torch.Tensor) -> str:
    """16 hex digits of sha256 over the tensors' float32 bytes (the identity of hand-made inputs)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _ref(module: torch.nn.Module | None, artifact: str | None) -> tuple[str | None, tuple[str, ...]]:
    """How a recipe names an input network: ``(artefact name, (name,))`` for an artefact (its
    identity then enters the generator's), else ``("weights sha256 <prefix>", ())``."""
    if module is None:
        return None, ()
    if artifact is not None and artifact in artifacts.list_artifacts():
        return artifact, (artifact,)
    return f"weights sha256 {tensors_identity(*module.state_dict().values())}", ()


def _gan_summary(gan: Any) -> dict[str, Any]:
    """A generator's training summary (its record): epochs, final losses, full history, info."""
    hist = gan.history if isinstance(gan.history, dict) else {"train": gan.history}
    return {"epochs": gan.epochs_done, "final": {k: last_epoch(v) for k, v in hist.items()}, "history": gan.history,
            "info": getattr(gan, "info", {})}


def _restore_state(module: Any, path: Any) -> None:
    """``ArtifactSpec.loads`` of the generators: the weights, then epochs/history/info from the record."""
    module.load_state_dict(load_state_file(path), strict=True)
    training = json.loads(read_metadata(path)[artifacts.META_KEY]).get("training", {})
    module.epochs_done = training.get("epochs", module.epochs_done)
    module.history = training.get("history", module.history)
    if hasattr(module, "info"):
        module.info = training.get("info", {})


def _interrupted(name: str, results: Any) -> None:
    for r in results if isinstance(results, list) else [results]:
        if getattr(r, "interrupted", False):
            raise interrupted(name)


def _build_start(ctx: BuildContext) -> tuple[str, Any, Any, Any]:
    """``(name, recipe, this run's inputs, a fresh generator on the build device)`` for a generator builder."""
    ctx.input("x")  # a clear error when the caller gave no training images
    with seeded(ctx.recipe.seed):
        gan = ctx.spec.make()
    return ctx.spec.name, ctx.recipe, ctx.inputs, gan.to(ctx.device)


def _build_tsgan(ctx: BuildContext) -> Built:
    """Builder of the TSGAN stage artefacts (in-memory inputs: :attr:`BuildContext.inputs`)."""
    name, r, inp, gan = _build_start(ctx)
    ckpt = ctx.checkpoint.with_name(ctx.checkpoint.name + ".safetensors")
    if r.stage == "normal":
        _interrupted(name, gan.fit_normal(inp["x"], device=ctx.device, seed=r.seed, progress=ctx.progress,
                                          checkpoint=ckpt))
        return Built(gan, _gan_summary(gan))
    stage1 = ctx.upstream(r.stage1) if r.stage1 in ctx.spec.upstream else inp["stage1"]
    gan.g_norm.load_state_dict(stage1.g_norm.state_dict())
    gan.critic.load_state_dict(stage1.critic.state_dict())
    gan.epochs_done["normal"] = int(stage1.epochs_done.get("normal", 0))
    if "normal" in stage1.history:
        gan.history["normal"] = list(stage1.history["normal"])
    target = ctx.upstream(r.target_model) if r.target_model in ctx.spec.upstream else inp["target_model"]
    content = None
    if r.content is not None:
        content = (T.content_from(r.content, ctx.upstream(r.content), record=inp.get("content_record"))
                   if r.content in ctx.spec.upstream else inp["content"])
    _interrupted(name, gan.fit_adversarial(inp["x"], target, list(r.targets), content=content, device=ctx.device,
                                           seed=r.seed, progress=ctx.progress, checkpoint=ckpt))
    gan.info["target_model"] = inp["target_label"]
    return Built(gan, _gan_summary(gan))


def _build_advgan(ctx: BuildContext) -> Built:
    """Builder of the AdvGAN artefacts (in-memory inputs: :attr:`BuildContext.inputs`)."""
    name, r, inp, gan = _build_start(ctx)
    target = ctx.upstream(r.target_model) if r.target_model in ctx.spec.upstream else inp["target_model"]
    _interrupted(name, gan.fit(inp["x"], inp["y"], target, device=ctx.device, seed=r.seed, progress=ctx.progress,
                               checkpoint=ctx.checkpoint.with_name(ctx.checkpoint.name + ".safetensors")))
    return Built(gan, _gan_summary(gan))


def _generator(name: str, recipe: Any, upstream: tuple[str, ...], make: Any, build: Any, inputs: dict[str, Any],
               device: torch.device, progress: bool, description: str) -> tuple[Any, Any]:
    """Register generator artefact ``name`` (replacing one made from other inputs) and get it."""
    try:
        old = artifacts.get_spec(name)
    except KeyError:
        old = None
    if old is None or old.recipe != recipe or old.upstream != upstream:
        artifacts.register(ArtifactSpec(name=name, make=make, filename=f"{name}.safetensors", kind="generator",
                                        dataset=recipe.data, recipe=recipe, build=build, upstream=upstream,
                                        description=description, loads=_restore_state), replace=True)
    return artifacts.get(name, device=device, progress=progress, inputs=inputs)


def _tsgan_make(cfg: Any, shape: tuple[int, ...], targets: tuple[int, ...]) -> Any:
    def make() -> Any:
        gan = T.TSGAN(cfg, tuple(shape))
        for t in targets:
            gan.init_adversarial(t)
        return gan

    return make


def _advgan_make(acfg: Any, shape: tuple[int, ...], target: int) -> Any:
    return lambda: A.AdvGAN(acfg, tuple(shape), target=target)


def tsgan_stage1(cfg: Any, x: torch.Tensor, *, seed: int, data: str, device: torch.device,
                 progress: bool = False) -> tuple[Any, Any]:
    """TSGAN's stage 1 (G_norm and its critic) on images ``x``: artefact
    ``tsgan_<config>_s<seed>_stage1``; ``(shared generator, record)``."""
    shape = tuple(x.shape[1:])
    recipe = TSGANRecipe(config=asdict(cfg), stage="normal", seed=seed, data=data, data_sha=tensors_identity(x), image_shape=shape)
    name = f"tsgan_{cfg.name}_s{seed}_stage1"
    return _generator(name, recipe, (), _tsgan_make(cfg, shape, ()), _build_tsgan, {"x": x}, device, progress,
                      "TSGAN stage 1 (the TSGAN paper's reproduction)")


def tsgan_stage2(cfg: Any, x: torch.Tensor, targets: list[int], *, seed: int, data: str, stage1: Any,
                 stage1_artifact: str | None, target_model: torch.nn.Module, target_artifact: str | None,
                 target_label: str, content: Any, device: torch.device, progress: bool = False) -> tuple[Any, Any]:
    """TSGAN's stage 2 for ``targets`` from ``stage1`` against ``target_model`` with ``content``
    (``None``: without the content loss): artefact ``tsgan_<config>_s<seed>_t<targets>_vs_<target>[_nocontent]``,
    upstream the stage-1, target and content artefacts; ``(shared generator, record)``."""
    s1, up1 = _ref(stage1, stage1_artifact)
    tm, up2 = _ref(target_model, target_artifact)
    cn, up3 = _ref(content, getattr(content, "artifact", None)) if content is not None else (None, ())
    shape = tuple(x.shape[1:])
    recipe = TSGANRecipe(config=asdict(cfg), stage="adversarial", targets=tuple(sorted(targets)), seed=seed, data=data,
                         data_sha=tensors_identity(x), image_shape=shape, target_model=tm, content=cn, stage1=s1,
                         stage2_batchnorm=T.STAGE2_BATCHNORM)
    label = (target_artifact if up2 else target_label.split()[0]) or "model"
    name = (f"tsgan_{cfg.name}_s{seed}_t{'-'.join(map(str, sorted(targets)))}_vs_{label}"
            + ("" if content is not None else "_nocontent"))
    inputs = {"x": x, "stage1": stage1, "target_model": target_model, "content": content, "target_label": target_label,
              "content_record": getattr(content, "record", None)}
    return _generator(name, recipe, up1 + up2 + up3, _tsgan_make(cfg, shape, recipe.targets), _build_tsgan, inputs,
                      device, progress, "TSGAN stage 2 (the TSGAN paper's reproduction)")


def advgan_for(acfg: Any, x: torch.Tensor, y: torch.Tensor, target: int, *, seed: int, data: str,
               target_model: torch.nn.Module, target_artifact: str | None, target_label: str, device: torch.device,
               progress: bool = False) -> tuple[Any, Any]:
    """AdvGAN for ``target`` against ``target_model``: artefact
    ``advgan_<config>_n<images>_s<seed>_t<target>_vs_<target model>``; ``(shared generator, record)``."""
    tm, up = _ref(target_model, target_artifact)
    shape = tuple(x.shape[1:])
    recipe = AdvGANRecipe(config=asdict(acfg), target=target, seed=seed, data=data, data_sha=tensors_identity(x, y.float()),
                          image_shape=shape, target_model=tm)
    label = (target_artifact if up else target_label.split()[0]) or "model"
    name = f"advgan_{acfg.name}_n{len(x)}_s{seed}_t{target}_vs_{label}"
    return _generator(name, recipe, up, _advgan_make(acfg, shape, target), _build_advgan,
                      {"x": x, "y": y, "target_model": target_model}, device, progress,
                      "AdvGAN (the TSGAN paper's reproduction)")


def last_epoch(history: list[dict[str, float]] | None) -> dict[str, float]:
    """The last epoch's averages of a training history, rounded (``{}`` when there is none)."""
    if not history:
        return {}
    return {k: round(float(v), 4) for k, v in history[-1].items() if k != "seconds"}
