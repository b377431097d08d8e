"""The artefact registry: find, download or train every network advviz uses, with provenance.

One path, :func:`get`, resolves a registered artefact in this order:

1. the weight folders (``$ADVVIZ_WEIGHTS``, then the files that ship in ``advviz/weights``);
2. advviz's cache (``<cache>/weights``);
3. a download checked by sha256 (not under ``$ADVVIZ_OFFLINE``);
4. training with the artefact's recipe (checkpointed per epoch; an interrupted run resumes).

**Identity.** An artefact trained by advviz is identified by its recipe hash and the identities
of its upstream artefacts (TSGAN's generator depends on its target model and its content
network): :func:`identity`. A file found on disk is used only when the identity written in its
metadata is today's; a file made with another recipe or another upstream is never reused
silently: it is retrained (logged as a warning), or, under ``$ADVVIZ_OFFLINE`` with
``$ADVVIZ_NO_TRAIN``, refused with a message that says so.

**Provenance.** :class:`Record` (name, file sha256, recipe and its hash, the upstream records,
the training summary) is written into the file's safetensors metadata when the artefact is made,
and read back from there on every load, never rebuilt from today's code.

**Seal.** Every file the store writes carries, beside its record, a seal: the sha256 of the record
and of the file's tensors together (:func:`seal`). A file whose record was edited or whose tensors
were replaced no longer matches its seal and is refused with a message that names it; a file of an
artefact trained by advviz without a seal (made by an older advviz) is not used.

**Providers.** The store knows no entry itself. Entries are registered by providers: modules
named in :data:`PROVIDERS` (``advviz.zoo``, the catalogue, and :mod:`advviz.models` for the zoo's
pretrained weights) and imported the first time a name is looked up, through the store's one
declared hook (:func:`load_providers`; :func:`add_provider` adds one). A spec may name its builder
by a string that a provider registers with :func:`register_builder`, so that an entry declared in
a low layer (a pretrained model in :mod:`advviz.models`) is trained by code of a higher one.

**Memoising** happens here only and is thread-safe: one eval-mode, frozen module per artefact,
identity and device. Callers must not change a module :func:`get` returns (no ``.to()``, no
``.train()``); they ask :func:`get` for another device instead, or :func:`fresh` for a copy of
their own.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advviz._paths import cache_dir, offline, weights_dirs
from advviz._registry import Registry
from advviz._weights import CheckpointError, load_state_file, read_metadata, save_state, sha256_file, tensors_sha256

__all__ = [
    "ArtifactError",
    "ArtifactSpec",
    "BuildContext",
    "Built",
    "Recipe",
    "Record",
    "register",
    "get",
    "fresh",
    "resolve",
    "record",
    "get_spec",
    "list_artifacts",
    "identity",
    "status",
    "forget",
    "track",
    "write",
    "META_KEY",
    "SEAL_KEY",
    "ADDED",
    "PROVIDERS",
    "add_provider",
    "load_providers",
    "register_builder",
    "seal",
    "sha256_file",
]

log = logging.getLogger(__name__)

#: ``dataclasses.field(metadata=ADDED)`` marks a recipe field added after files were made (see :meth:`Recipe.hash`).
ADDED: dict[str, bool] = {"added": True}

#: safetensors metadata key holding the JSON :class:`Record` (without ``sha256``/``path``/``source``).
META_KEY = "advviz.record"

#: safetensors metadata key holding the file's seal (:func:`seal`).
SEAL_KEY = "advviz.seal"

#: the modules that register the store's entries, imported on first look-up (:func:`load_providers`).
PROVIDERS: list[str] = ["advviz.models", "advviz.zoo"]


class ArtifactError(CheckpointError):
    """An artefact cannot be had: not found, not downloadable, stale and not retrainable, or corrupt."""


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """Base of the typed training recipes: a frozen dataclass whose fields are the training settings.

    Subclasses add fields with defaults. :meth:`hash` is a stable digest of the class name and the
    field values, so changing any field changes every identity that depends on it.
    """

    def to_dict(self) -> dict[str, Any]:
        """Field values as JSON-ready types (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def hash(self) -> str:
        """16 hex digits of sha256 over ``{"type": class name, **fields}`` (canonical JSON).

        A field declared with ``metadata=ADDED`` (added after files were made with the class) is
        left out while it holds its default, so those files keep their identity.
        """
        d = self.to_dict()
        for f in dataclasses.fields(self):
            if f.metadata.get("added") and getattr(self, f.name) == f.default:
                d.pop(f.name)
        payload = json.dumps({"type": type(self).__name__, **d}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` applied (unknown fields raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """Where an artefact came from.

    Attributes:
        name: the artefact's registry name.
        sha256: sha256 of the file the weights were read from (``""`` before it exists).
        identity: what a file must carry to be used (:func:`identity`).
        recipe: the training recipe's fields (``None`` for downloaded or user-made weights).
        recipe_hash: :meth:`Recipe.hash` (``None`` without a recipe).
        upstream: the records of the artefacts it was made from, as written when it was made.
        training: the training summary written when it was made (epochs, final losses, metrics).
        source: ``"weights folder"``, ``"shipped"``, ``"cache"``, ``"download"`` or ``"trained now"``.
        path: the file.
    """

    name: str
    sha256: str
    identity: str
    recipe: dict[str, Any] | None = None
    recipe_hash: str | None = None
    upstream: tuple[Record, ...] = ()
    training: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (upstream records nested)."""
        return {"name": self.name, "sha256": self.sha256, "identity": self.identity, "recipe": self.recipe,
                "recipe_hash": self.recipe_hash, "upstream": [u.to_dict() for u in self.upstream],
                "training": self.training, "source": self.source, "path": self.path}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        """Inverse of :meth:`to_dict` (missing keys take their defaults)."""
        return cls(name=str(d["name"]), sha256=str(d.get("sha256", "")), identity=str(d.get("identity", "")),
                   recipe=d.get("recipe"), recipe_hash=d.get("recipe_hash"),
                   upstream=tuple(cls.from_dict(u) for u in d.get("upstream", ())),
                   training=dict(d.get("training") or {}), source=str(d.get("source", "")),
                   path=str(d.get("path", "")))

    def line(self) -> str:
        """One line for a printed table: name, sha256 prefix, recipe hash."""
        return f"{self.name}  sha256 {self.sha256[:12] or '-'}  recipe {self.recipe_hash or '-'}  ({self.source})"

    def flat(self) -> list[Record]:
        """This record and every upstream record, depth first, each name once."""
        out: list[Record] = []
        seen: set[str] = set()

        def visit(r: Record) -> None:
            if r.name in seen:
                return
            seen.add(r.name)
            out.append(r)
            for u in r.upstream:
                visit(u)

        visit(self)
        return out


# ---------------------------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Built:
    """What a builder returns: the trained module (any device) and its training summary."""

    module: nn.Module
    training: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildContext:
    """What a builder gets.

    Attributes:
        spec: the artefact being built.
        device: where to train.
        progress: show progress bars.
        checkpoint: a folder for per-epoch checkpoints (resumed after an interruption).
        inputs: in-memory inputs of this build, passed to :func:`get` / :func:`resolve` by the
            caller (e.g. the training images of a generator); their identity must be in the recipe.
    """

    spec: ArtifactSpec
    device: torch.device
    progress: bool
    checkpoint: Path
    inputs: Mapping[str, Any] = field(default_factory=dict)

    def input(self, key: str) -> Any:
        """The build input ``key``; a clear error when the caller did not pass it."""
        try:
            return self.inputs[key]
        except KeyError:
            raise ArtifactError(f"{self.spec.name} is built from in-memory inputs ({key!r} missing): "
                                f"{self.spec.description or 'see its provider'}") from None

    @property
    def recipe(self) -> Any:
        """The spec's typed recipe."""
        return self.spec.recipe

    def upstream(self, name: str) -> nn.Module:
        """A private, trainable copy of upstream artefact ``name`` on :attr:`device`."""
        if name not in self.spec.upstream:
            raise ArtifactError(f"{self.spec.name} uses {name!r} without declaring it in upstream={self.spec.upstream}")
        return fresh(name, device=self.device)


@dataclass(frozen=True)
class ArtifactSpec:
    """A registered artefact.

    Attributes:
        name: registry name (``"uddn_resnet20_cifar10"``).
        make: ``() -> nn.Module``: the architecture, with fresh weights, that the file loads into.
        filename: the file name looked up in the weight folders and the cache.
        kind: ``"classifier"``, ``"purifier"``, ``"generator"``, ``"feature network"`` ... (listings).
        dataset: what it was trained on.
        recipe: the typed training recipe (``None``: downloaded or made by the user).
        build: ``(BuildContext) -> Built``: trains it with ``recipe`` (``None``: not trainable here),
            or the name of a builder a provider registers (:func:`register_builder`).
        upstream: names of the artefacts it is made from (their identities enter this one's).
        url: download address (``None``: not downloadable).
        sha256: the published file's sha256 (checked after download and on load), or the start of it
            that a publisher gives (torchvision's file names carry 8 hex digits).
        description: one line for listings; for user-made weights, how to make them.
        loads: ``(module, path) -> None`` reading a file into ``make()``'s module (default: a
            strict state-dict load through :func:`advviz._weights.load_state_file`).
        arch: for a classifier of :mod:`advviz.models`: its architecture's name (``None`` otherwise).
        arch_kwargs: the architecture's keyword arguments.
        input_size: ``(C, H, W)`` the network takes (``None``: the architecture's own).
    """

    name: str
    make: Callable[[], nn.Module]
    filename: str
    kind: str = "network"
    dataset: str = ""
    recipe: Recipe | None = None
    build: Callable[[BuildContext], Built] | None = None
    upstream: tuple[str, ...] = ()
    url: str | None = None
    sha256: str | None = None
    description: str = ""
    loads: Callable[[nn.Module, Path], None] | None = None
    arch: str | None = None
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int, int] | None = None


_SPECS: Registry[ArtifactSpec] = Registry("artefact")
_BUILDERS: Registry[Callable[[BuildContext], Built]] = Registry("artefact builder")
_PROVIDERS_LOADED: set[str] = set()
_LOCK = threading.RLock()
_NAME_LOCKS: dict[str, threading.RLock] = {}
# keyed by name, identity, the folders searched (a changed $ADVVIZ_WEIGHTS / $ADVVIZ_CACHE looks again)
# and, for modules, the device
_MEMO: dict[tuple[str, str, str, str], tuple[nn.Module, Record]] = {}
_RESOLVED: dict[tuple[str, str, str], tuple[Path, Record]] = {}


_TRACKERS: list[list[str]] = []


def _where() -> str:
    return os.pathsep.join(map(str, weights_dirs()))


def _note(name: str) -> None:
    """Tell every open :func:`track` block that ``name`` was asked for."""
    if _TRACKERS:
        with _LOCK:
            for used in _TRACKERS:
                if name not in used:
                    used.append(name)


@contextmanager
def track() -> Iterator[list[str]]:
    """``with track() as used:``: ``used`` lists, in first-use order, every artefact asked for
    (:func:`get`, :func:`resolve`, :func:`fresh`, :func:`record`; any thread) while the block runs,
    including the upstream of one trained now. Asked for, not necessarily obtained: a failed
    download is listed too (:func:`advviz.artifacts.records` keeps the ones on disk)."""
    used: list[str] = []
    with _LOCK:
        _TRACKERS.append(used)
    try:
        yield used
    finally:
        with _LOCK:
            _TRACKERS.remove(used)


def register(spec: ArtifactSpec, *, replace: bool = False) -> ArtifactSpec:
    """Register ``spec`` (a second spec of the same name raises, unless ``replace``: then it takes
    the old one's place and the old one's memoised modules are dropped)."""
    with _LOCK:
        if (spec.recipe is None) != (spec.build is None):
            raise ValueError(f"artefact {spec.name!r}: a recipe and a builder go together")
        if replace and spec.name in _SPECS:
            forget(spec.name)
        _SPECS.add(spec.name, spec, replace=replace)
    return spec


def register_builder(name: str, build: Callable[[BuildContext], Built]) -> Callable[[BuildContext], Built]:
    """Register a builder that specs name by ``name`` (``ArtifactSpec(build=name)``); duplicates raise."""
    with _LOCK:
        _BUILDERS.add(name, build)
    return build


def add_provider(module: str) -> None:
    """Add a module that registers entries (imported now if providers were loaded already)."""
    with _LOCK:
        if module not in PROVIDERS:
            PROVIDERS.append(module)
    load_providers()


def load_providers() -> None:
    """Import every module of :data:`PROVIDERS` once: the store's one declared hook for its entries.

    A provider being imported (its entries may look each other up) is not imported again; one
    whose import failed is tried again on the next look-up.
    """
    for module in list(PROVIDERS):
        with _LOCK:
            if module in _PROVIDERS_LOADED:
                continue
            _PROVIDERS_LOADED.add(module)
        try:
            importlib.import_module(module)
        except BaseException:
            with _LOCK:
                _PROVIDERS_LOADED.discard(module)
            raise


def get_spec(name: str) -> ArtifactSpec:
    """The :class:`ArtifactSpec` registered as ``name``."""
    if name not in _SPECS:
        load_providers()
    try:
        return _SPECS.get(name)
    except KeyError:
        raise KeyError(f"no artefact named {name!r}; `advviz artifacts list` shows them: "
                       f"{', '.join(_SPECS.names())}") from None


def list_artifacts() -> list[str]:
    """Names of every registered artefact, sorted."""
    load_providers()
    return _SPECS.names()


def _builder(spec: ArtifactSpec) -> Callable[[BuildContext], Built]:
    if isinstance(spec.build, str):
        load_providers()
        return _BUILDERS.get(spec.build)
    assert spec.build is not None
    return spec.build


# ---------------------------------------------------------------------------------------------
# identity and files
# ---------------------------------------------------------------------------------------------

def identity(name: str) -> str:
    """What a file of artefact ``name`` must carry to be used, computed from today's code.

    * trained by advviz: 16 hex digits of sha256 over the recipe hash and the upstream identities;
    * downloaded: the published sha256's first 16 digits;
    * made by the user (neither): ``"user"`` (any file of that name is used).
    """
    spec = get_spec(name)
    if spec.recipe is not None:
        payload = json.dumps({"name": name, "recipe": spec.recipe.hash(),
                              "upstream": {u: identity(u) for u in spec.upstream}}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
    if spec.sha256:
        return spec.sha256[:16]
    return "user"


def seal(record_json: str, tensors: str) -> str:
    """The seal of a file: sha256 over its record (the JSON string in its metadata) and its tensors
    (:func:`advviz._weights.tensors_sha256`). Editing either breaks it."""
    return hashlib.sha256(json.dumps({"record": record_json, "tensors": tensors}).encode()).hexdigest()


def _read_meta(path: Path) -> dict[str, str]:
    try:
        return read_metadata(path)
    except CheckpointError as exc:
        raise ArtifactError(f"{exc}; or run `advviz artifacts build` for it") from exc


def _check_seal(spec: ArtifactSpec, path: Path, meta: Mapping[str, str]) -> bool:
    """``True`` when the file's seal matches its record and tensors; ``False`` when it has none.

    Raises:
        ArtifactError: the seal does not match (the record or the tensors were changed).
    """
    if SEAL_KEY not in meta:
        return False
    got = seal(meta[META_KEY], tensors_sha256(load_state_file(path)))
    if got != meta[SEAL_KEY]:
        raise ArtifactError(f"{path} was changed after advviz wrote it: its record or its weights no longer match "
                            f"its seal, so it is not used. Delete it and run `advviz artifacts build {spec.name}` "
                            "(or restore the original file)")
    return True


def _file_record(spec: ArtifactSpec, path: Path, source: str) -> Record | None:
    """The file's record if it carries today's identity (``None``: made otherwise; it must not be used)."""
    want = identity(spec.name)
    digest = sha256_file(path)
    if spec.recipe is None:
        if spec.sha256 and not digest.startswith(spec.sha256):
            raise ArtifactError(f"{path} is corrupt (sha256 {digest[:12]}… differs from the published "
                                f"{spec.sha256[:12]}…); delete it and download it again")
        meta = _read_meta(path)
        if META_KEY in meta:
            _check_seal(spec, path, meta)
            rec = Record.from_dict(json.loads(meta[META_KEY]))
            return dataclasses.replace(rec, sha256=digest, source=source, path=str(path), identity=want)
        return Record(name=spec.name, sha256=digest, identity=want, source=source, path=str(path),
                      training={"description": spec.description} if spec.description else {})
    meta = _read_meta(path)
    if META_KEY not in meta:
        log.warning("not using %s: it has no advviz record (made by an older advviz?); artefact %s needs "
                    "identity %s", path, spec.name, want)
        return None
    rec = Record.from_dict(json.loads(meta[META_KEY]))
    if rec.identity != want:
        log.warning("not using %s: made with recipe %s (identity %s), today's %s is recipe %s (identity %s)",
                    path, rec.recipe_hash, rec.identity, spec.name, spec.recipe.hash(), want)
        return None
    if not _check_seal(spec, path, meta):
        log.warning("not using %s: it carries no seal (made by an older advviz); artefact %s is made again",
                    path, spec.name)
        return None
    return dataclasses.replace(rec, sha256=digest, source=source, path=str(path))


def write(name: str, module: nn.Module, path: str | os.PathLike[str], *, training: Mapping[str, Any] | None = None,
          half: bool = False, upstream: tuple[Record, ...] | None = None) -> Record:
    """Save ``module`` as artefact ``name``'s file at ``path`` with its record in the metadata.

    Args:
        name: a registered artefact.
        module: the trained module (its state dict is written).
        path: where (atomically replaced).
        training: the training summary to record.
        half: store floating tensors as float16 (the copies that ship with advviz).
        upstream: the upstream records (default: resolved now).

    Returns:
        The record as read back (``sha256`` of the written file).
    """
    spec = get_spec(name)
    if upstream is None:
        upstream = tuple(resolve(u)[1] for u in spec.upstream)
    rec = Record(name=name, sha256="", identity=identity(name),
                 recipe=spec.recipe.to_dict() if spec.recipe is not None else None,
                 recipe_hash=spec.recipe.hash() if spec.recipe is not None else None,
                 upstream=tuple(dataclasses.replace(u, path="") for u in upstream),
                 training=json.loads(json.dumps(dict(training or {}), default=str)))
    meta = json.dumps({k: v for k, v in rec.to_dict().items() if k not in ("sha256", "source", "path")})
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path = save_state(state, path, metadata={META_KEY: meta, SEAL_KEY: seal(meta, tensors_sha256(state)), "name": name})
    return dataclasses.replace(rec, sha256=sha256_file(path), path=str(path))


# ---------------------------------------------------------------------------------------------
# resolution
# ---------------------------------------------------------------------------------------------

def _name_lock(name: str) -> threading.RLock:
    with _LOCK:
        return _NAME_LOCKS.setdefault(name, threading.RLock())


def _no_train() -> bool:
    return os.environ.get("ADVVIZ_NO_TRAIN", "").strip().lower() in {"1", "true", "yes", "on"}


def status(name: str) -> dict[str, Any]:
    """Where artefact ``name`` would come from now, without downloading or training anything.

    Returns:
        ``{"name", "present", "where", "path", "identity", "recipe_hash", "stale"}``: ``where`` is
        ``"weights folder"``, ``"shipped"``, ``"cache"``, ``"download"``, ``"train"`` or
        ``"unavailable"``; ``stale`` lists files found with another identity.
    """
    spec = get_spec(name)
    stale: list[str] = []
    for folder, source in _folders(weights_dirs(), cache_dir()):
        cand = folder / spec.filename
        if cand.is_file():
            try:
                ok = _file_record(spec, cand, source) is not None
            except ArtifactError:
                ok = False
            if ok:
                return {"name": name, "present": True, "where": source, "path": str(cand), "identity": identity(name),
                        "recipe_hash": spec.recipe.hash() if spec.recipe else None, "stale": stale}
            stale.append(str(cand))
    where = ("download" if spec.url and not offline() else "train" if spec.build is not None else "unavailable")
    return {"name": name, "present": False, "where": where, "path": None, "identity": identity(name),
            "recipe_hash": spec.recipe.hash() if spec.recipe else None, "stale": stale}


def _folders(dirs: list[Path], cache: Path) -> list[tuple[Path, str]]:
    """The folders searched, in order, with their source names: the weight folders (which end with
    the shipped files and advviz's cache), then torch's hub cache (torchvision's own downloads)."""
    shipped = Path(__file__).resolve().parents[1] / "weights"
    out = []
    for d in dirs:
        if d.resolve() == (cache / "weights").resolve():
            out.append((d, "cache"))
        elif d.resolve() == shipped:
            out.append((d, "shipped"))
        else:
            out.append((d, "weights folder"))
    out.append((Path(torch.hub.get_dir()) / "checkpoints", "torch hub cache"))
    return out


def resolve(name: str, *, device: str | torch.device | None = None, progress: bool = False,
            inputs: Mapping[str, Any] | None = None) -> tuple[Path, Record]:
    """The file of artefact ``name`` and its record, downloading or training it when needed.

    Args:
        name: a registered artefact (:func:`list_artifacts`).
        device: where to train when it must be trained (default: CUDA when available, else CPU).
        progress: show progress bars while downloading or training.
        inputs: in-memory build inputs (:attr:`BuildContext.inputs`), used only when it is trained now.

    Raises:
        ArtifactError: not found and neither downloadable nor trainable here; or stale with
            training forbidden (``$ADVVIZ_NO_TRAIN``); or corrupt.
    """
    _note(name)
    spec = get_spec(name)
    key = (name, identity(name), _where())
    with _name_lock(name):
        hit = _RESOLVED.get(key)
        if hit is not None and Path(hit[0]).is_file():
            return hit
        stale: list[Path] = []
        for folder, source in _folders(weights_dirs(), cache_dir()):
            cand = folder / spec.filename
            if cand.is_file():
                rec = _file_record(spec, cand, source)
                if rec is not None:
                    _RESOLVED[key] = (cand, rec)
                    return cand, rec
                stale.append(cand)
        target = cache_dir() / "weights" / spec.filename
        if spec.url is not None:
            if offline():
                raise ArtifactError(f"weights {name!r} not found: put {spec.filename} into $ADVVIZ_WEIGHTS "
                                    f"(searched {[str(d) for d in weights_dirs()]}); downloads are disabled by "
                                    "ADVVIZ_OFFLINE")
            _download(spec.url, target, spec.sha256)
            rec = _file_record(spec, target, "download")
            assert rec is not None
            _RESOLVED[key] = (target, rec)
            return target, rec
        if spec.build is None:
            raise ArtifactError(f"weights {name!r} ({spec.filename}) not found in {[str(d) for d in weights_dirs()]} "
                                f"and not downloadable. {spec.description}")
        if stale and _no_train():
            raise ArtifactError(
                f"{name}: found {', '.join(map(str, stale))}, made with another recipe or upstream than today's "
                f"(identity {identity(name)}), and ADVVIZ_NO_TRAIN forbids retraining it; unset ADVVIZ_NO_TRAIN "
                f"or run `advviz artifacts build {name}`")
        if _no_train():
            raise ArtifactError(f"{name} is not on disk and ADVVIZ_NO_TRAIN forbids training it; unset it or run "
                                f"`advviz artifacts build {name}`")
        upstream = tuple(resolve(u, device=device, progress=progress)[1] for u in spec.upstream)
        dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        log.info("training %s on first use (recipe %s, %s); cached at %s", name, spec.recipe.hash(),  # type: ignore[union-attr]
                 spec.recipe, target)
        ctx = BuildContext(spec=spec, device=dev, progress=progress,
                           checkpoint=cache_dir() / "checkpoints" / f"{name}-{identity(name)}", inputs=dict(inputs or {}))
        built = _builder(spec)(ctx)
        rec = write(name, built.module, target, training=built.training, upstream=upstream)
        rec = dataclasses.replace(rec, source="trained now")
        _RESOLVED[key] = (target, rec)
        return target, rec


def _download(url: str, target: Path, sha256: str | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    log.info("downloading %s -> %s", url, target)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:  # noqa: S310 - fixed https URLs
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ArtifactError(f"could not download {url} ({exc}); with no network, put the file "
                            f"{target.name} into a folder and set ADVVIZ_WEIGHTS to it") from exc
    if sha256 is not None:
        got = sha256_file(tmp)
        if not got.startswith(sha256):
            tmp.unlink(missing_ok=True)
            raise ArtifactError(f"downloaded {url} has sha256 {got}, expected {sha256}; not using it")
    os.replace(tmp, target)


def _load_into(spec: ArtifactSpec, path: Path) -> nn.Module:
    module = spec.make()
    if spec.loads is not None:
        spec.loads(module, path)
    else:
        try:
            module.load_state_dict(load_state_file(path), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not fit artefact {spec.name!r}: {exc}") from exc
    return module.eval()


def fresh(name: str, *, device: str | torch.device | None = None, progress: bool = False,
          inputs: Mapping[str, Any] | None = None) -> nn.Module:
    """A private copy of artefact ``name`` (eval mode, trainable parameters) the caller may change."""
    path, _ = resolve(name, device=device, progress=progress, inputs=inputs)
    module = _load_into(get_spec(name), path)
    return module.to(device) if device is not None else module


def get(name: str, *, device: str | torch.device | None = None, progress: bool = False,
        inputs: Mapping[str, Any] | None = None) -> tuple[nn.Module, Record]:
    """Artefact ``name`` as a shared, eval-mode, frozen module on ``device``, with its record.

    The one path to every network advviz downloads or trains (module docstring). Memoised per
    artefact, identity and device; thread-safe. Do not change the returned module: use
    :func:`fresh` for a copy to train or move.

    Args:
        name: a registered artefact (:func:`list_artifacts`).
        device: where the module lives (default CPU); training, when needed, runs there too.
        progress: show progress bars while downloading or training.
        inputs: in-memory build inputs, used only when it must be trained now (:func:`resolve`).

    Returns:
        ``(module, record)``.
    """
    _note(name)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    key = (name, identity(name), _where(), str(dev))
    with _name_lock(name):
        hit = _MEMO.get(key)
        if hit is not None:
            return hit
        cpu_key = (*key[:3], "cpu")
        if dev.type != "cpu" and cpu_key in _MEMO:
            module = copy.deepcopy(_MEMO[cpu_key][0]).to(dev)
            rec = _MEMO[cpu_key][1]
        else:
            path, rec = resolve(name, device=device, progress=progress, inputs=inputs)
            module = _load_into(get_spec(name), path).to(dev)
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()
        _MEMO[key] = (module, rec)
        return module, rec


def record(name: str, *, progress: bool = False) -> Record:
    """Artefact ``name``'s record (resolving, and if needed making, its file)."""
    return resolve(name, progress=progress)[1]


def forget(name: str | None = None) -> None:
    """Drop memoised modules and resolutions (of ``name``, or all): the next :func:`get` looks again."""
    with _LOCK:
        for d in (_MEMO, _RESOLVED):
            for k in [k for k in d if name is None or k[0] == name]:
                del d[k]
