"""The ``advviz`` command: ``demo``, ``train``, ``explore``, ``reproduce``, ``evaluate``, ``bench``, ``artifacts``.

Each subcommand's work lives in the module that owns it; this file only parses arguments and
dispatches, and prints the returned text (the CLI is the one place that writes to stdout).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from advviz import artifacts, data, distributed, models
from advviz._cli_parse import (
    ModelChoice,
    add_model_options,
    attach_dash_values,
    check_writable,
    folder_classes,
    parse_attacks,
    parse_budgets,
    parse_data,
    parse_device,
    parse_model_options,
    positive_int,
)
from advviz._modules import module_device
from advviz.demo import run_demo, run_train
from advviz.evaluate import robust_accuracy, threat_models
from advviz.papers._common import format_provenance

__all__ = ["main", "build_parser"]

# reproduce PAPER -> module with run(table=..., quick=..., n=..., seed=...) -> dict and format(result) -> str
PAPERS = {
    "cfr": "advviz.papers.cfr",
    "tsgan": "advviz.papers.tsgan",
    "purifier": "advviz.papers.purifier",
    "uddn": "advviz.papers.uddn",
    "twostream": "advviz.papers.twostream",
}
# bench WHAT -> module with run(n=..., quick=..., device=..., seed=...) -> list[dict] and format(rows) -> str
BENCHES = {
    "attacks": "advviz.benchmarks.attacks",
    "autoattack": "advviz.benchmarks.autoattack",
    "autoattack-parts": "advviz.benchmarks.autoattack_parts",
    "widgets": "advviz.benchmarks.widgets",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the tests)."""
    p = argparse.ArgumentParser(prog="advviz", description="Explore adversarial attacks and defenses on image classifiers.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train LeNet-5 on the offline digits data, attack it, summarise")
    d.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recorded recipe)")
    d.add_argument("--eps", type=float, default=0.1, help="attack budget on the [0, 1] scale (default 0.1)")
    d.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="train a zoo model on a dataset and save its weights")
    t.add_argument("model", help="architecture name (advviz.models.list_models())")
    t.add_argument("--data", default="digits", help="dataset: digits, mnist or cifar10 (default digits)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    t.add_argument("--schedule", choices=("none", "cosine"), default="none")
    t.add_argument("--augment", action="store_true", help="random crop + flip (CIFAR-style)")
    t.add_argument("--out", required=True,
                   help="output weights (.safetensors), written when training completes (never half-written); a "
                        "checkpoint pair <out>.ckpt.* is kept beside it and resumed by a rerun with the same settings")
    t.add_argument("--fresh", action="store_true",
                   help="start from epoch 0 even if a checkpoint of another run exists beside --out (it is replaced)")
    t.add_argument("--device", default=None)
    t.add_argument("--seed", type=int, default=0)

    e = sub.add_parser("explore", help="open the explorer notebook in JupyterLab (on your own model and images)",
                       description="Open the explorer in JupyterLab. With a model option and/or --data, it opens a "
                                   "notebook written for them (<advviz cache>/explorer/your_model.ipynb, rewritten at "
                                   "each such launch) whose first cell loads them with advviz's public functions.")
    e.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    e.add_argument("--no-browser", action="store_true", help="only print the URL")
    e.add_argument("--data", default=None, help="the images to explore: a dataset (digits, mnist, cifar10) or a folder "
                                                "(one sub-folder per class, or a flat folder)")
    add_model_options(e, model_help="a pretrained entry (resnet20_cifar10) or a factory returning an nn.Module: "
                                    "package.module:function or path/to/file.py:function")

    r = sub.add_parser("reproduce", help="re-run a paper's experiment headless and compare with the paper")
    r.add_argument("paper", choices=sorted(PAPERS))
    r.add_argument("--table", default=None, help="which table/figure (default: the paper's main table)")
    r.add_argument("--quick", action="store_true", help="small configuration (about a minute on a 2-core CPU)")
    r.add_argument("--n", type=int, default=None, help="number of images")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--dataset", default=None,
                   help="the paper's dataset column where it has several (tsgan: mnist or cifar10)")
    r.add_argument("--model", default=None,
                   help="the target model where the paper has several (tsgan CIFAR-10: resnet20 or resnet32)")
    r.add_argument("--json", default=None, help="write the result as JSON to this path")

    v = sub.add_parser("evaluate", help="robust accuracy of a model (optionally defended) per budget and attack",
                       description="Robust accuracy per eps and attack (AutoAttack by default), sanity flags, "
                                   "per-sample results by dataset index; resumable.")
    v.add_argument("model", nargs="?", default=None,
                   help="pretrained model name (advviz.models.list_models(pretrained=True)); or name your own model "
                        "with --arch/--weights or --model")
    v.add_argument("--defense", default=None, help="purifier in front of the model (advviz.defenses.list_purifiers())")
    v.add_argument("--threat", choices=("oblivious", "adaptive"), default="adaptive",
                   help="with --defense: attack the bare model (oblivious) or the whole defense, with BPDA through "
                        "non-differentiable purifiers (adaptive, default)")
    v.add_argument("--eot", type=positive_int, default=None,
                   help="adaptive: average logits over this many purifier draws (EOT; default: 20 when the defense "
                        "is found random by two forward passes of the same images, else 1)")
    v.add_argument("--data", default=None, help="dataset (digits, mnist, cifar10) or a folder of images, one "
                                                "sub-folder per class (default: the dataset a pretrained model was "
                                                "trained on)")
    v.add_argument("--split", default="test", help="the dataset's split (not used with a folder)")
    v.add_argument("--eps", default="8/255", help="comma-separated budgets on the [0, 1] scale, each >= 0, e.g. "
                                                   "2/255,4/255,8/255 (default 8/255)")
    v.add_argument("--norm", choices=("Linf", "L2"), default="Linf")
    v.add_argument("--attacks", default="autoattack",
                   help="autoattack, or comma-separated attack names with optional parameters after a colon, "
                        "separated by ';' (e.g. pgd:steps=40;alpha=eps/8,apgd_ce:n_iter=50); default autoattack")
    v.add_argument("--version", choices=("standard", "fast"), default="standard", help="AutoAttack version")
    v.add_argument("--n", "--num-images", dest="n", type=positive_int, default=None,
                   help="number of images, a seeded random subset (default: all); under torchrun spell it "
                        "--num-images (torchrun's own parser takes --n for one of its options)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--batch-size", type=positive_int, default=128, help="images per batch, at least 1 (default 128)")
    v.add_argument("--batch-invariant", action="store_true",
                   help="attack each image alone (results independent of batching; slower)")
    v.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or mps (default: the model's, CPU)")
    v.add_argument("--json", default=None, help="write config, provenance, results, flags and per-sample results")
    v.add_argument("--plot", default=None, help="write the security curve as an interactive HTML page (plotly)")
    v.add_argument("--resume", default=None,
                   help="JSON-lines file of per-sample results to append to and resume from (refused when written "
                        "with another configuration or other weights: the sha256 of every artefact is recorded)")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.add_argument("--no-steps-check", action="store_true",
                   help="skip the steps check (iterative attacks rerun with k and 2k steps on 16 points; more "
                        "steps doing worse raises the non-monotonic flag)")
    v.add_argument("--no-restarts-check", action="store_true",
                   help="skip the restarts check (attacks with a random start rerun from 3 starts on 16 points; more "
                        "starts breaking more points raises the restarts flag)")
    v.add_argument("--nproc", type=positive_int, default=None,
                   help="run on N processes through torchrun (one per GPU; gloo on a CPU); the per-sample results "
                        "are those of one process")
    add_model_options(v, model_help="a factory returning an nn.Module: package.module:function or "
                                    "path/to/file.py:function (or a pretrained entry, as the positional name)")

    b = sub.add_parser("bench", help="benchmarks (advviz beside the reference implementation)")
    b.add_argument("what", choices=sorted(BENCHES))
    b.add_argument("--n", type=int, default=None, help="number of images")
    b.add_argument("--quick", action="store_true", help="fewer images and repeats")
    b.add_argument("--device", default="cpu")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", default=None, help="write the rows as JSON to this path")
    b.add_argument("--model", default=None, help="autoattack: the pretrained model (default resnet20_cifar10)")
    b.add_argument("--eps", default=None, help="autoattack: comma-separated L-inf budgets, e.g. 0.25/255,0.5/255")
    b.add_argument("--defense", default=None, help="autoattack: a purifier in front of the model")
    b.add_argument("--threat", choices=("oblivious", "adaptive"), default=None,
                   help="autoattack with --defense: the threat model (default adaptive)")
    b.add_argument("--repeats", type=positive_int, default=None, help="autoattack: timed rounds (median; default 3)")
    b.add_argument("--threads", type=positive_int, default=None, help="torch threads during the benchmark")

    a = sub.add_parser("artifacts", help="the networks advviz downloads or trains: list, build, ship")
    asub = a.add_subparsers(dest="action", required=True)
    asub.add_parser("list", help="every artefact: present or not, where it would come from, recipe hash")
    ab = asub.add_parser("build", help="make artefacts now (find, download or train them)")
    ab.add_argument("names", nargs="+", help="artefact names (advviz artifacts list)")
    ab.add_argument("--device", default=None, help="where to train (default: CUDA when available)")
    ab.add_argument("--ship", action="store_true",
                    help="also write the float16 copy with its record into advviz/weights (the shipped files)")
    ar = asub.add_parser("readme", help="advviz/weights/README.md generated from the shipped files' records")
    ar.add_argument("--write", action="store_true", help="write it (default: print it)")
    return p


def _out(text: str, *, err: bool = False) -> None:
    """Write one block of text to stdout (or stderr): the CLI is the only place advviz writes."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _relaunch_with_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """``advviz evaluate ... --nproc N``: the same command under ``torchrun --standalone``."""
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif a == "--n" or a.startswith("--n="):  # torchrun's parser would read --n as an abbreviation
            rest.append(a.replace("--n", "--num-images", 1))
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "advviz", *rest]
    return subprocess.call(cmd)


def _evaluate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    # every option is checked before any work (relaunch, model, data, batch)
    eps = parse_budgets(args.eps, norm=args.norm)
    attacks = parse_attacks(args.attacks)
    device_asked = parse_device(args.device) if args.device else None
    if args.eot not in (None, 1) and (args.defense is None or args.threat != "adaptive"):
        raise ValueError("--eot applies to an adaptive attack on a --defense")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_writable(path, option)
    if args.resume:
        check_writable(args.resume, "--resume", make_folders=True)
    choice = parse_model_options(args, positional=args.model)
    where = parse_data(args.data)
    if where is None and not choice.named:
        raise ValueError(f"--data is needed for {choice.label}: a dataset (digits, mnist, cifar10) or a folder of images")
    if args.nproc is not None and not distributed.active() and "WORLD_SIZE" not in os.environ:
        return _relaunch_with_torchrun(args.nproc, argv)
    many = distributed.init(device_asked)
    device = device_asked if device_asked is not None else (distributed.local_device() if many else None)
    with artifacts.track() as used:  # every artefact behind the numbers, the purifier's included
        model = choice.build(device)
        dataset, dataset_name = _evaluation_data(choice, model, where, args.split)
        attacked, evaluated, threat = threat_models(model, args.defense, threat=args.threat, eot_samples=args.eot)
        if args.defense is not None:
            _first_forward(evaluated, dataset, device)
    own = choice.provenance()  # the weight file's (or the factory's) sha256; the store records its own
    meta = {"model": choice.label, "data": dataset_name, "split": args.split if isinstance(where, str) or where is None
            else "folder", **threat, **own,
            **({"data_sha256": dataset.sha256} if getattr(dataset, "sha256", None) else {}),
            "artifacts": {r.name: r.sha256 for r in artifacts.records(used, on_disk_only=True)}}
    result = robust_accuracy(evaluated, dataset, attacks=attacks, eps=eps, norm=args.norm, n=args.n,
                             batch_size=args.batch_size, device=device, progress=not args.no_progress,
                             resume=args.resume, seed=args.seed, version=args.version, attack_model=attacked,
                             batch_invariant=args.batch_invariant, meta=meta, steps_check=not args.no_steps_check,
                             restarts_check=not args.no_restarts_check)
    if not distributed.is_main():  # rank 0 reports and writes for all
        return 0 if result.complete else 130
    # the records of the files actually loaded (model and defense), read from the store
    provenance = artifacts.provenance(used, on_disk_only=True) + ([_own_provenance(own)] if own else [])
    _out("\n".join([result.format(), "artefacts:", *(f"  {line}" for line in artifacts.provenance_lines(provenance))]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result.to_json(provenance=provenance), fh, indent=1)
    if args.plot:
        title = f"{choice.label}{' + ' + args.defense + ' (' + args.threat + ')' if args.defense else ''} on " \
                f"{result.n} {dataset_name} images: security curve"
        result.figure(title=title).write_html(args.plot, include_plotlyjs=True)
    if not result.complete:
        _out(f"interrupted after {result.n} images" + (f"; rerun with --resume {args.resume} to continue"
                                                        if args.resume else ""), err=True)
        return 130
    return 0


def _evaluation_data(choice: ModelChoice, model: torch.nn.Module, where: str | os.PathLike[str] | None,
                     split: str) -> tuple[Dataset, str]:
    """The images ``advviz evaluate`` runs on, and their name: a named dataset's split, or a folder
    read at the model's input size with its class folders matched to the model's classes."""
    if where is None:  # a pretrained entry's own dataset
        name = models.get_weights_spec(str(choice.name)).dataset
        return data.load(name, split), name
    if isinstance(where, str):
        return data.load(where, split), where
    size = tuple(getattr(model, "input_size"))
    classes = choice.classes or getattr(model, "classes", None)
    if classes is None and choice.named:
        ds = models.get_weights_spec(str(choice.name)).dataset
        classes = data.CIFAR10_CLASSES if ds == "cifar10" else data.DIGIT_CLASSES
    k = int(getattr(model, "num_classes", 0) or 0)
    dataset = data.folder(where, size=size, classes=folder_classes(where, classes, k))
    if bool((dataset.labels < 0).any()):
        raise ValueError(f"{where} holds images without a class folder: robust accuracy needs the true label of "
                         "every image; put them into one sub-folder per class")
    return dataset, str(where)


def _own_provenance(own: dict) -> dict:
    """A provenance entry (as the store's records are written) for a weight file or a factory."""
    if "weights_file" in own:
        f = own["weights_file"]
        return {"name": Path(f["path"]).name, "sha256": f["sha256"], "source": "weights file", "path": f["path"],
                "arch": f["arch"]}
    f = own["factory"]
    return {"name": f["spec"], "sha256": f["sha256"], "source": "factory", "path": f["file"]}


def _explore(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``advviz explore``: the explorer notebook; with a model or ``--data``, a notebook written for them
    (:func:`advviz.widgets.launch.model_notebook`) whose first cell loads them with the public functions."""
    mod = importlib.import_module("advviz.widgets.launch")
    if not any(getattr(args, k, None) for k in ("model_option", "arch", "weights", "data")):
        return int(mod.main(port=args.port, open_browser=not args.no_browser, report=_out) or 0)
    where = parse_data(args.data)
    choice = parse_model_options(args) if any(getattr(args, k, None) for k in ("model_option", "arch", "weights")) \
        else None
    code = ["from advviz import models", "from advviz.widgets import Explorer", ""]
    kwargs = [f"dataset={str(where)!r}"] if where is not None else []
    if choice is None or (choice.named and not choice.input_size and not choice.mean):
        target = repr(choice.name) if choice is not None else "None"  # a zoo entry: the store describes it
    else:
        target = "model"
        code += choice.code()
        prov = choice.provenance()
        if prov:
            what = prov.get("weights_file") or prov["factory"]
            source = what.get("path") or what.get("file") or what.get("spec")
            digest = (what.get("sha256") or "?")[:12]
            line = f"{source} (sha256 {digest}...)"
            kwargs.append(f"provenance={line!r}")
        kwargs.append(f"name={choice.label!r}")
    if choice is not None and choice.classes:
        kwargs.append(f"classes={list(choice.classes)!r}")
    code += [f"explorer = Explorer({', '.join([target] + kwargs)})", "explorer"]
    nb = mod.model_notebook("\n".join(code), command="advviz explore " + " ".join(argv[1:]))
    return int(mod.main(port=args.port, open_browser=not args.no_browser, report=_out, notebook=nb) or 0)


def _first_forward(model: torch.nn.Module, dataset: Dataset, device: torch.device | None) -> None:
    """One image through the defended model, so that a purifier loads the networks it uses now (the
    artefacts it asks for are recorded in the resume file's configuration); random draws are not
    consumed (the generators' states are restored)."""
    x = dataset[0][0].unsqueeze(0)
    dev = device if device is not None else module_device(model)
    cuda = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        model(x.to(dev))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``advviz`` console script; returns the exit status."""
    args = build_parser().parse_args(attach_dash_values(sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    failed = False
    try:
        if args.command == "demo":
            _out(run_demo(epochs=args.epochs, eps=args.eps, seed=args.seed))
        elif args.command == "train":
            text = run_train(args)
            if text:  # under torchrun only rank 0 reports
                _out(text)
        elif args.command == "explore":
            return _explore(args, sys.argv[1:] if argv is None else list(argv))
        elif args.command == "reproduce":
            mod = importlib.import_module(PAPERS[args.paper])
            extra = {}
            if args.dataset is not None:
                if "dataset" not in inspect.signature(mod.run).parameters:
                    raise ValueError(f"reproduce {args.paper} has no --dataset option")
                extra["dataset"] = args.dataset
            if args.model is not None:
                if "model" not in inspect.signature(mod.run).parameters:
                    raise ValueError(f"reproduce {args.paper} has no --model option")
                extra["model"] = args.model
            result = mod.run(table=args.table, quick=args.quick, n=args.n, seed=args.seed, **extra)
            _out(mod.format(result) + "\n" + format_provenance(result))
            if args.json:
                with open(args.json, "w") as fh:
                    json.dump(result, fh, indent=1)
        elif args.command == "evaluate":
            return _evaluate(args, sys.argv[1:] if argv is None else list(argv))
        elif args.command == "artifacts":
            if args.action == "list":
                _out(artifacts.listing())
            elif args.action == "build":
                _out(artifacts.build(args.names, device=args.device, ship_=args.ship))
            elif args.action == "readme":
                _out(f"wrote {artifacts.write_weights_readme()}" if args.write else artifacts.weights_readme())
        elif args.command == "bench":
            mod = importlib.import_module(BENCHES[args.what])
            extra = {k: v for k, v in (("model", args.model), ("defense", args.defense), ("threat", args.threat),
                                       ("repeats", args.repeats), ("threads", args.threads),
                                       ("eps", parse_budgets(args.eps, norm="Linf") if args.eps else None))
                     if v is not None}
            takes = inspect.signature(mod.run).parameters
            for key in extra:
                if key not in takes:
                    raise ValueError(f"bench {args.what} has no --{key} option")
            rows = mod.run(n=args.n, quick=args.quick, device=args.device, seed=args.seed, **extra)
            _out(mod.format(rows))
            if args.json:
                with open(args.json, "w") as fh:
                    json.dump(rows, fh, indent=1)
    except KeyboardInterrupt as exc:
        failed = True
        _out(f"interrupted{': ' + str(exc) if str(exc) else ''}", err=True)
        return 130
    except (ValueError, KeyError, FileNotFoundError, ModuleNotFoundError) as exc:
        failed = True
        _out(f"advviz: error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", err=True)
        return 2
    except FloatingPointError as exc:  # training diverged (e.g. a learning rate far too large)
        failed = True
        _out(f"advviz: error: training diverged: {exc}", err=True)
        return 2
    except BaseException:
        failed = True
        raise
    finally:  # under torchrun: every rank leaves the process group together (after an error, at once)
        distributed.shutdown(wait=not failed)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
