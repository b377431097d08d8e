"""Reading the command line's text into typed, checked values (the CLI's side, beside ``cli.py``).

Every value is read in two steps: the text becomes the type of the parameter's
:class:`~advviz._registry.ParamSpec` (:func:`parse_value`; numbers may be fractions, ``8/255``),
then :meth:`ParamSpec.validate <advviz._registry.ParamSpec.validate>` checks it. The library
(:func:`advviz.evaluate.robust_accuracy`) takes the typed values. All checks run before any
model, dataset or batch is touched, so that a bad option costs nothing and says what to do:

* :func:`parse_eps` (one budget), :func:`parse_budgets` (``--eps``: a comma-separated list);
* :func:`parse_attacks` (``--attacks``: names with typed parameters);
* :func:`positive_int` (an ``argparse`` type), :func:`parse_device` (``--device``);
* :func:`check_writable` (``--json``, ``--plot``, ``--resume``);
* :func:`parse_model_options` (``--model``, ``--arch``/``--weights``, ``--input-size``, ``--mean``,
  ``--std``, ``--classes`` of ``advviz evaluate`` and ``advviz explore``): a :class:`ModelChoice`
  that builds the model (:meth:`ModelChoice.build`), writes the same steps as notebook code
  (:meth:`ModelChoice.code`) and records the weights' provenance (:meth:`ModelChoice.provenance`);
  :func:`parse_data` (``--data``: a dataset name or a folder of images);
* :func:`attach_dash_values`: ``--eps -1/255`` reaches the budget check instead of argparse's
  "expected one argument".
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advviz import attacks as A
from advviz import data, models
from advviz._registry import ParamSpec, parse_number
from advviz._weights import sha256_file
from advviz.attacks._core import check_budget

__all__ = ["RUNNER_KEYS", "ModelChoice", "add_model_options", "attach_dash_values", "check_writable", "parse_attacks",
           "parse_budgets", "parse_data", "parse_device", "folder_classes", "parse_eps", "parse_model_options", "parse_value",
           "positive_int"]

#: attack parameters ``robust_accuracy`` sets itself (with the option that sets them), or that do not
#: apply to robust accuracy (``None``): never given per attack on the command line
RUNNER_KEYS: dict[str, str | None] = {"eps": "--eps", "norm": "--norm", "seed": "--seed", "targeted": None,
                                      "mask": None}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_eps(text: str | float) -> float:
    """One budget: ``"8/255"`` -> 0.0313..., ``"0.5"`` -> 0.5; refuses what is not a number and a
    negative, infinite or NaN budget (a value above 1 is for the caller to judge: L2 radii may be).

    Raises:
        ValueError: the message quotes the text and says how to write a budget.
    """
    return _read_budget(text, "", scale_255=False)


def parse_budgets(text: str, *, norm: str = "Linf", option: str = "--eps") -> list[float]:
    """``--eps``: comma-separated budgets (``"2/255,4/255,8/255"``), each read as by :func:`parse_eps`;
    in L-infinity a value above 1 is refused with the ``k/255`` it probably means.

    Raises:
        ValueError: empty, unreadable or out-of-range budgets; the message names ``option``.
    """
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"{option} is empty: give at least one budget, e.g. {option} 8/255")
    return [_read_budget(item, f"{option} {item}", scale_255=str(norm).lower() == "linf") for item in items]


def _read_budget(text: str | float, where: str, *, scale_255: bool) -> float:
    """A budget read by :func:`~advviz._registry.parse_number` and checked by
    :func:`~advviz.attacks._core.check_budget`; errors start with ``where``."""
    lead = f"{where}: " if where else ""
    try:
        value = parse_number(text)
    except ValueError:
        raise ValueError(f"{lead}cannot read the budget {str(text).strip()!r}: write a number like 0.03 or a "
                         "fraction like 8/255") from None
    try:
        return check_budget("eps", value, scale_255=scale_255)
    except ValueError as exc:
        why = " (a budget is the largest change allowed, so at least 0, e.g. 8/255)" if value < 0 else ""
        raise ValueError(f"{lead}{exc}{why}") from None


def _kind_of(default: Any) -> str:
    """A ParamSpec kind for a parameter that has no spec, from its default (``"str"`` for text)."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    return "str" if isinstance(default, str) else "float"


def parse_value(spec: ParamSpec, text: str, *, where: str = "") -> Any:
    """``text`` as ``spec``'s type, then checked by :meth:`ParamSpec.validate`.

    ``bool``: true/false (also 1/0, yes/no, on/off); ``choice``: one of the choices as written;
    ``int``: an integer; ``float``: a number or a fraction (``2/255``). A ``per255`` value above 1
    gets the ``k/255`` it probably means. The ranges' upper ends are the widgets' slider ends, not
    limits: only ``low`` and the choices are enforced here (an attack with a hard upper limit
    checks it itself).

    Args:
        spec: the parameter's spec.
        text: the value as typed.
        where: how the message names the value (default ``name=text``).

    Raises:
        ValueError: ``"<where>: <what is wrong>"``.
    """
    t = text.strip()
    where = where or f"{spec.name}={text}"
    key = spec.name
    if spec.kind == "bool":
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
        raise ValueError(f"{where}: {key} is true or false")
    if spec.kind == "choice":
        for choice in spec.choices or ():
            if str(choice) == t:
                return choice
        raise ValueError(f"{where}: {key} must be one of {', '.join(map(str, spec.choices or ()))}")
    value: Any
    if spec.kind == "int":
        try:
            value = int(t)
        except ValueError:
            raise ValueError(f"{where}: {key} must be an integer") from None
    else:
        try:
            value = parse_number(t)
        except ValueError:
            raise ValueError(f"{where}: {key} must be a number (0.01, 2/255, or eps/4 relative to each "
                             "budget)") from None
        if spec.per255 and value > 1:
            raise ValueError(f"{where}: {key} is on the [0, 1] pixel scale; did you mean {key}={t}/255?")
    try:
        dataclasses.replace(spec, high=None).validate(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return value


def parse_attacks(text: str) -> list[str | tuple[str, dict[str, Any]]]:
    """Read ``--attacks``: names with optional parameters, typed from each attack's signature.

    ``"pgd:steps=40;alpha=eps/8,apgd_ce:n_iter=50,fgsm"``: attacks are separated by commas; an
    attack's parameters follow a colon, separated by semicolons (or commas: a ``key=value`` item
    after a comma belongs to the attack before it, so ``pgd:steps=40,alpha=2/255`` works too).
    Values are typed by :func:`parse_value` from the attack's :class:`~advviz._registry.ParamSpec`
    (else from its default): integers, numbers or fractions (``2/255``; ``eps/4`` or ``eps*0.5``
    is relative to each budget, resolved by the runner), ``true``/``false``, choices. Unknown keys
    are refused with the list of valid ones; ``eps``, ``norm`` and ``seed`` are set by their own
    options, ``targeted`` and ``mask`` do not apply (:data:`RUNNER_KEYS`).

    Returns:
        ``[name | (name, {key: value})]`` for :func:`advviz.evaluate.robust_accuracy`.

    Raises:
        KeyError: an unknown attack (listing the registered ones).
        ValueError: anything else, quoting the offending item.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for token in (t.strip() for t in str(text).split(",")):
        if not token:
            continue
        head, sep, rest = token.partition(":")
        if not sep and "=" in head:  # "alpha=2/255" after a comma: the previous attack's parameter
            if not out:
                raise ValueError(f"--attacks {text!r}: {token!r} comes before any attack name (write pgd:{token})")
            name, items = out[-1][0], [token]
        else:
            name, items = head.strip(), [i for i in rest.split(";") if i.strip()]
            if sep and not items:
                raise ValueError(f"--attacks {text!r}: nothing after {name}: (write {name}:key=value)")
            if name == "autoattack":
                if items:
                    raise ValueError("autoattack takes no parameters here: choose its --version (standard or fast), "
                                     "or list its attacks with their parameters (apgd_ce:n_iter=50,apgd_t,...)")
            else:
                A.get(name)  # unknown names raise here, listing the registered ones
            out.append((name, {}))
        if not items:
            continue
        spec = A.get(name)
        sig = inspect.signature(spec.fn).parameters
        specs = {p.name: p for p in spec.params}
        valid = [k for k, p in sig.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in RUNNER_KEYS]
        for item in items:
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ValueError(f"--attacks {text!r}: {item!r} is not key=value (e.g. {name}:{valid[0]}=...)"
                                 if valid else f"--attacks {text!r}: {name} takes no parameters")
            if key in RUNNER_KEYS:
                opt = RUNNER_KEYS[key]
                raise ValueError(f"{name}:{key} is set by {opt}, not per attack" if opt else
                                 f"{name}:{key} does not apply to robust accuracy (untargeted, whole image)")
            if key not in valid:
                raise ValueError(f"{name} has no parameter {key!r}; valid: {', '.join(valid)}")
            if key in out[-1][1]:
                raise ValueError(f"{name}:{key} is given twice")
            out[-1][1][key] = _attack_value(name, key, value, specs.get(key), sig[key].default)
    return [n if not p else (n, p) for n, p in out]


def _attack_value(attack: str, key: str, text: str, spec: ParamSpec | None, default: Any) -> Any:
    """One ``--attacks`` value: ``eps/4``-style text kept for the runner, else :func:`parse_value`
    with the attack's spec (or one made from the default's type)."""
    where = f"{attack}:{key}={text}"
    kind = spec.kind if spec is not None else _kind_of(default)
    t = text.strip()
    if kind == "str":  # free text without a spec: taken as written
        return t
    if kind == "float" and t.startswith(("eps/", "eps*")):  # relative to each budget (resolved per eps)
        try:
            parse_number(t[4:])
        except ValueError:
            raise ValueError(f"{where}: write eps/4 or eps*0.5 for a value relative to each budget") from None
        return t
    return parse_value(spec if spec is not None else ParamSpec(key, default, kind=kind), text, where=where)


def positive_int(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1 (``--batch-size``, ``--n``...)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {value}")
    return value


def parse_device(text: str, *, option: str = "--device") -> torch.device:
    """``--device``: ``cpu``, ``cuda``, ``cuda:1`` or ``mps``, checked to exist on this machine.

    Raises:
        ValueError: not a device name, or a device this machine does not have (what to use instead).
    """
    try:
        dev = torch.device(str(text).strip())
    except (RuntimeError, ValueError):
        raise ValueError(f"{option} {text!r} is not a device: write cpu, cuda, cuda:1 or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {text}: no CUDA GPU is usable on this machine (torch.cuda.is_available() is "
                             f"False); leave {option} out, or write {option} cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {text}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered 0 to {torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{option} {text}: Apple's MPS is not available here; leave {option} out, or write "
                         f"{option} cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{option} {text}: advviz runs on cpu, cuda or mps")
    return dev


def check_writable(path: str | Path, option: str, *, make_folders: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written (and an existing file is not replaced
    by a folder, nor a folder by a file). Nothing is created or changed.

    Args:
        path: the file an option will write.
        option: the option, for the message (``"--json"``).
        make_folders: missing folders will be created (``--resume``): the nearest existing one
            must be writable. Otherwise the folder must exist.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: the path is a folder, a folder on the way is a file, a folder is missing, or
            the file or folder is not writable; the message says which and what to do.
    """
    p = Path(path)
    fix = "choose a path in a folder you can write"
    if p.is_dir():
        raise ValueError(f"{option} {p} is a folder: give a file path, e.g. {p / ('results' + _suffix(option))}")
    folder = p.parent
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{option} {p}: {folder} is a file, not a folder; {fix}")
    if missing and not make_folders:
        raise ValueError(f"{option} {p}: the folder {p.parent} does not exist; create it first or {fix}")
    try:
        if p.exists():
            with open(p, "ab"):  # opening for writing changes nothing
                pass
        else:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".advviz-write-check-"):
                pass
    except OSError as exc:
        where = p if p.exists() else folder
        raise ValueError(f"{option} {p}: cannot write {'the file' if p.exists() else 'in the folder'} {where} "
                         f"({exc.strerror or exc}); {fix}, or make this one writable") from None
    return p


def _suffix(option: str) -> str:
    return {"--json": ".json", "--plot": ".html", "--resume": ".jsonl"}.get(option, "")


_DASH_VALUE = re.compile(r"^-[0-9.]")


def attach_dash_values(argv: Sequence[str], options: Sequence[str] = ("--eps",)) -> list[str]:
    """``["--eps", "-1/255"]`` -> ``["--eps=-1/255"]``: argparse takes a value that starts with a dash
    and is not a plain negative number for an option, and answers "expected one argument"; joined,
    the value reaches the budget check, which says what is wrong with it."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in options and i + 1 < len(argv) and _DASH_VALUE.match(argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


# ---------------------------------------------------------------------------------------------
# the model and the images of `advviz evaluate` / `advviz explore`
# ---------------------------------------------------------------------------------------------

#: weight files ``--weights`` takes (read safely: safetensors, or ``torch.load(weights_only=True)``)
WEIGHT_SUFFIXES = (".safetensors", ".th", ".pt", ".pth", ".bin", ".ckpt")


def add_model_options(p: argparse.ArgumentParser, *, model_help: str) -> None:
    """The options that name a model (a zoo entry, an architecture with a weight file, or a factory)."""
    g = p.add_argument_group("your own model", "a zoo entry, an architecture with a weight file, or a factory; "
                                               "--input-size/--mean/--std wrap it (advviz.models.wrap)")
    g.add_argument("--model", dest="model_option", default=None, metavar="NAME_OR_FACTORY", help=model_help)
    g.add_argument("--arch", default=None, help="an architecture (advviz.models.list_models(): resnet20, lenet5, "
                                                "vgg16...), with --weights")
    g.add_argument("--weights", default=None, help="its weight file: .safetensors, or a PyTorch .th/.pt state dict "
                                                   "(read with weights_only=True, never unpickled)")
    g.add_argument("--input-size", default=None, metavar="C,H,W",
                   help="the image size the model takes, e.g. 3,32,32 (needed when the model does not declare it)")
    g.add_argument("--mean", default=None, help="per-channel normalisation mean on the [0, 1] scale, e.g. "
                                                "0.485,0.456,0.406 (the model then takes [0, 1] images)")
    g.add_argument("--std", default=None, help="per-channel normalisation std, with --mean")
    g.add_argument("--classes", default=None,
                   help="the model's class names in the order of its outputs: comma-separated, or a dataset name "
                        "(cifar10, digits, mnist); a --data folder's class folders are matched to them by name")


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(float(parse_number(t)) for t in str(text).split(",") if t.strip())
    except ValueError:
        raise ValueError(f"{option} {text!r}: write numbers separated by commas, e.g. {option} 0.5,0.5,0.5") from None
    if not vals:
        raise ValueError(f"{option} is empty")
    return vals


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """The model the command line names, checked (:func:`parse_model_options`); nothing loaded yet.

    Attributes:
        name: a pretrained entry (``resnet20_cifar10``), or ``None``.
        arch, weights: an architecture and the absolute path of its weight file, or ``None``.
        factory: ``"package.module:function"`` / ``"file.py:function"`` (:func:`advviz.models.from_factory`).
        input_size, mean, std: :func:`advviz.models.wrap`'s settings, when given.
        classes: the model's class names, when given.
        cwd: the folder a factory's module is imported from.
    """

    name: str | None = None
    arch: str | None = None
    weights: str | None = None
    factory: str | None = None
    input_size: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None
    cwd: str = ""

    @property
    def label(self) -> str:
        """A display name: the entry, the weight file's name, or the factory."""
        return self.name or (Path(self.weights).name if self.weights else str(self.factory))

    @property
    def named(self) -> bool:
        """A zoo entry (whose dataset and provenance the store knows)."""
        return self.name is not None

    def _wrap_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in (("input_size", self.input_size), ("mean", self.mean), ("std", self.std)) if v}

    def build(self, device: torch.device | str | None = None) -> nn.Module:
        """The model, eval mode: loaded, built by its factory, and wrapped when asked or needed.

        Raises:
            ValueError: a model without a declared input size and no ``--input-size`` (and what
                :func:`advviz.models.wrap` refuses); the loaders' errors otherwise.
        """
        if self.name is not None:
            model = models.load(self.name, device=device)
        elif self.arch is not None:
            model = models.load(self.arch, weights=self.weights, device=device)
        else:
            if self.cwd and self.cwd not in sys.path:
                sys.path.insert(0, self.cwd)
            model = models.from_factory(str(self.factory))
        wrap = self._wrap_kwargs()
        if wrap or getattr(model, "input_size", None) is None:
            if "input_size" not in wrap and getattr(model, "input_size", None) is None:
                raise ValueError(f"{self.label} does not say which image size it takes: give --input-size C,H,W "
                                 "(e.g. 3,32,32), and --mean/--std if it was trained on normalised images")
            model = models.wrap(model, name=self.label, **wrap)
        return model.to(device) if device is not None else model

    def code(self) -> list[str]:
        """The same steps as notebook code (``model = ...``), for ``advviz explore``'s notebook."""
        if self.name is not None:
            lines = [f"model = models.load({self.name!r})"]
        elif self.arch is not None:
            lines = [f"model = models.load({self.arch!r}, weights={self.weights!r})  # read safely (weights_only)"]
        else:
            lines = (["import sys", f"sys.path.insert(0, {self.cwd!r})  # where advviz explore was started"]
                     if self.cwd else [])
            lines.append(f"model = models.from_factory({self.factory!r})")
        wrap = self._wrap_kwargs()
        if wrap:
            args = ", ".join(f"{k}={v!r}" for k, v in wrap.items())
            lines.append(f"model = models.wrap(model, {args}, name={self.label!r})")
        return lines

    def provenance(self) -> dict[str, Any]:
        """What to record beside the results: the weight file's path and sha256, or the factory and the
        sha256 of its source file (``{}`` for a zoo entry: the store records it)."""
        if self.weights is not None:
            return {"weights_file": {"path": self.weights, "sha256": sha256_file(self.weights), "arch": self.arch}}
        if self.factory is not None:
            where = self.factory.rpartition(":")[0]
            path = Path(where) if where.endswith(".py") else None
            if path is None:
                spec = importlib.util.find_spec(where) if where else None
                path = Path(spec.origin) if spec is not None and spec.origin else None
            return {"factory": {"spec": self.factory, "file": str(path) if path else None,
                                "sha256": sha256_file(path) if path is not None and path.is_file() else None}}
        return {}


def parse_model_options(args: argparse.Namespace, *, positional: str | None = None) -> ModelChoice:
    """Read the model options into a :class:`ModelChoice`, checked before anything is loaded.

    Exactly one of: a pretrained entry (``positional`` or ``--model NAME``), ``--arch`` with
    ``--weights``, or a factory (``--model pkg.module:build``, recognised by its colon).

    Raises:
        ValueError: none or several sources, ``--weights`` without ``--arch`` (or the reverse), an
            unknown name, a missing weight file, unreadable sizes or statistics; the message says
            what to write.
    """
    option = getattr(args, "model_option", None)
    factory = option if option and ":" in option else None
    name = positional or (option if option and not factory else None)
    if positional and option:
        raise ValueError(f"give the model once: either {positional} or --model {option}")
    if getattr(args, "weights", None) and not getattr(args, "arch", None):
        raise ValueError("--weights needs --arch: the architecture the file belongs to (e.g. --arch resnet20)")
    arch = getattr(args, "arch", None)
    if arch and not getattr(args, "weights", None):
        raise ValueError(f"--arch {arch} needs --weights FILE (a fresh, untrained {arch} would tell nothing)")
    sources = [s for s in (name, arch, factory) if s]
    if len(sources) != 1:
        raise ValueError("name one model: a pretrained entry (" + ", ".join(models.list_models(pretrained=True)) +
                         "), --arch NAME --weights FILE, or --model package.module:function" if not sources else
                         f"name one model, not several ({', '.join(sources)})")
    weights = None
    if name is not None and name not in models.list_models(pretrained=True):
        hint = (f" (an architecture: give --arch {name} --weights FILE)" if name in models.list_models() else "")
        raise ValueError(f"unknown pretrained model {name!r}{hint}; pretrained: "
                         f"{', '.join(models.list_models(pretrained=True))}")
    if arch is not None:
        if arch not in models.list_models():
            raise ValueError(f"--arch {arch}: unknown architecture; choose one of {', '.join(models.list_models())}")
        path = Path(args.weights).expanduser()
        if not path.is_file():
            raise ValueError(f"--weights {args.weights}: no such file")
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise ValueError(f"--weights {path.name}: advviz reads {', '.join(WEIGHT_SUFFIXES)} weight files")
        weights = str(path.resolve())
    size = None
    if getattr(args, "input_size", None):
        try:
            size = tuple(int(t) for t in str(args.input_size).replace("x", ",").split(",") if t.strip())
        except ValueError:
            raise ValueError(f"--input-size {args.input_size!r}: write C,H,W, e.g. 3,32,32") from None
        if len(size) not in (1, 2, 3) or min(size) < 1:
            raise ValueError(f"--input-size {args.input_size!r}: write C,H,W, e.g. 3,32,32")
    mean, std = _floats(getattr(args, "mean", None), "--mean"), _floats(getattr(args, "std", None), "--std")
    if (mean is None) != (std is None):
        raise ValueError("give --mean and --std together (the normalisation the model was trained with)")
    classes = None
    text = getattr(args, "classes", None)
    if text:
        classes = (tuple(data.CIFAR10_CLASSES if text == "cifar10" else data.DIGIT_CLASSES) if text in data.DATASETS
                   else tuple(c.strip() for c in text.split(",") if c.strip()))
    return ModelChoice(name=name, arch=arch, weights=weights, factory=factory, input_size=size, mean=mean, std=std,
                       classes=classes, cwd=os.getcwd() if factory else "")


def parse_data(text: str | None) -> str | Path | None:
    """``--data``: a dataset name (``digits``, ``mnist``, ``cifar10``) or a folder of images.

    Raises:
        ValueError: neither a dataset name nor a folder.
    """
    if text is None or text in data.DATASETS:
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve()
    raise ValueError(f"--data {text}: neither a dataset ({', '.join(data.DATASETS)}) nor a folder of images")


def folder_classes(path: Path, classes: Sequence[str] | None, num_classes: int) -> list[str] | None:
    """The class names to match a folder's class folders against (:func:`advviz.data.folder`'s
    ``classes``): the model's names when known; else output indices, when the folders are named
    ``0``, ``1``... .

    Raises:
        ValueError: named class folders and no class names to match them to.
    """
    if classes:
        return list(classes)
    subdirs = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs and not all(d.isdigit() for d in subdirs):
        raise ValueError(f"{path} has class folders ({', '.join(subdirs[:6])}) but the model's class names are not "
                         "known: give --classes (its class names in output order, comma-separated, or a dataset "
                         "name such as cifar10) so that each folder is matched to its output")
    return [str(i) for i in range(num_classes)]
