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

import torch
from torch.utils.data import Dataset

from advviz import artifacts, data, distributed, models
from advviz._cli_parse import (
    attach_dash_values,
    check_writable,
    parse_attacks,
    parse_budgets,
    parse_device,
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

    e = sub.add_parser("explore", help="open the explorer notebook in JupyterLab")
    e.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    e.add_argument("--no-browser", action="store_true", help="only print the URL")

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
    v.add_argument("model", help="pretrained model name (advviz.models.list_models(pretrained=True))")
    v.add_argument("--defense", default=None, help="purifier in front of the model (advviz.defenses.list_purifiers())")
    v.add_argument("--threat", choices=("oblivious", "adaptive"), default="adaptive",
                   help="with --defense: attack the bare model (oblivious) or the whole defense, with BPDA through "
                        "non-differentiable purifiers (adaptive, default)")
    v.add_argument("--eot", type=positive_int, default=None,
                   help="adaptive: average logits over this many purifier draws (EOT; default: 20 when the defense "
                        "is found random by two forward passes of the same images, else 1)")
    v.add_argument("--data", default=None, help="dataset (default: the one the model was trained on)")
    v.add_argument("--split", default="test")
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
    v.add_argument("--nproc", type=positive_int, default=None,
                   help="run on N processes through torchrun (one per GPU; gloo on a CPU); the per-sample results "
                        "are those of one process")

    b = sub.add_parser("bench", help="benchmarks (advviz beside the reference implementation)")
    b.add_argument("what", choices=sorted(BENCHES))
    b.add_argument("--n", type=int, default=None, help="number of images")
    b.add_argument("--quick", action="store_true", help="fewer images and repeats")
    b.add_argument("--device", default="cpu")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", default=None, help="write the rows as JSON to this path")

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
    if args.nproc is not None and not distributed.active() and "WORLD_SIZE" not in os.environ:
        return _relaunch_with_torchrun(args.nproc, argv)
    many = distributed.init(device_asked)
    device = device_asked if device_asked is not None else (distributed.local_device() if many else None)
    with artifacts.track() as used:  # every artefact behind the numbers, the purifier's included
        model = models.load(args.model, device=device)
        dataset_name = args.data or models.get_weights_spec(args.model).dataset
        dataset = data.load(dataset_name, args.split)
        attacked, evaluated, threat = threat_models(model, args.defense, threat=args.threat, eot_samples=args.eot)
        if args.defense is not None:
            _first_forward(evaluated, dataset, device)
    meta = {"model": args.model, "data": dataset_name, "split": args.split, **threat,
            "artifacts": {r.name: r.sha256 for r in artifacts.records(used, on_disk_only=True)}}
    result = robust_accuracy(evaluated, dataset, attacks=attacks, eps=eps, norm=args.norm, n=args.n,
                             batch_size=args.batch_size, device=device, progress=not args.no_progress,
                             resume=args.resume, seed=args.seed, version=args.version, attack_model=attacked,
                             batch_invariant=args.batch_invariant, meta=meta, steps_check=not args.no_steps_check)
    if not distributed.is_main():  # rank 0 reports and writes for all
        return 0 if result.complete else 130
    _out(result.format())
    if args.json:
        with open(args.json, "w") as fh:
            # the records of the files actually loaded (model and defense), read from the store
            provenance = artifacts.provenance(used, on_disk_only=True)
            json.dump(result.to_json(provenance=provenance), fh, indent=1)
    if args.plot:
        title = f"{args.model}{' + ' + args.defense + ' (' + args.threat + ')' if args.defense else ''} on " \
                f"{result.n} {dataset_name} images: security curve"
        result.figure(title=title).write_html(args.plot, include_plotlyjs=True)
    if not result.complete:
        _out(f"interrupted after {result.n} images" + (f"; rerun with --resume {args.resume} to continue"
                                                        if args.resume else ""), err=True)
        return 130
    return 0


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
            mod = importlib.import_module("advviz.widgets.launch")
            return int(mod.main(port=args.port, open_browser=not args.no_browser, report=_out) or 0)
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
            rows = mod.run(n=args.n, quick=args.quick, device=args.device, seed=args.seed)
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
