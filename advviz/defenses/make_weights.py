"""Re-make the learned purifiers' weights that ship in ``advviz/weights/``.

``python -m advviz.defenses.make_weights WHAT... [--out DIR] [--device cpu|cuda]`` with WHAT among

* ``perceptual``: the slim CIFAR VGG-19 of the cGAN's perceptual loss
  (:data:`advviz.defenses.pix2pix.PERCEPTUAL_RECIPE` ``"full"``);
* ``fgsm`` / ``pgd``: the pix2pix and cGAN generators trained on that attack's pairs
  (:data:`advviz.defenses.pix2pix.RECIPES` ``"full"``);
* ``uddn`` / ``dae``: the denoisers of :data:`advviz.defenses.uddn.RECIPES` ``"full"``;
* ``gnr``: that recipe's GNR noise generator (:func:`advviz.defenses.uddn.load_gnr`), which
  notebook 05 uses instead of training one.

Each network is trained with its recipe (or taken from the user cache when already trained
there: ``ADVVIZ_CACHE``), then written as float16 safetensors with the same name and metadata
into ``--out`` (default: advviz's own ``advviz/weights/``). Training shows progress bars and
resumes from its per-epoch checkpoint after an interruption.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from torch import nn

__all__ = ["main", "ship"]

log = logging.getLogger(__name__)

WHAT = ("perceptual", "fgsm", "pgd", "uddn", "dae", "gnr")


def ship(src: Path, out_dir: Path, model: nn.Module) -> Path:
    """Write ``model``'s weights as float16 into ``out_dir / src.name``, with ``src``'s metadata."""
    from safetensors import safe_open

    from advviz import models

    with safe_open(str(src), "pt") as fh:
        meta = dict(fh.metadata() or {})
    return models.save_weights(model, Path(out_dir) / src.name, metadata=meta, half=True)


def main(argv: list[str] | None = None) -> list[Path]:
    """Train what is named and write the shipped copies; returns the files written."""
    from advviz._paths import cache_dir
    from advviz.defenses import pix2pix, uddn

    parser = argparse.ArgumentParser(prog="python -m advviz.defenses.make_weights",
                                     description="Re-make the learned purifiers' shipped weights.")
    parser.add_argument("what", nargs="+", choices=WHAT)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "weights")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written: list[Path] = []

    def out(src: Path, net: nn.Module) -> None:
        if src.resolve().parent != args.out.resolve():
            written.append(ship(src, args.out, net))
            log.info("wrote %s", written[-1])

    if "perceptual" in args.what:
        net, _, desc = pix2pix.perceptual_network(device=args.device, progress=True)
        src = cache_dir() / "weights" / pix2pix.PERCEPTUAL_FILE
        if src.is_file():
            out(src, net)
        else:
            log.info("perceptual network in use: %s (nothing to write)", desc)
    for attack in ("fgsm", "pgd"):
        if attack in args.what:
            for kind in ("pix2pix", "cgan"):
                gen, rec = pix2pix.load_purifier(kind, attack=attack, config="full", device=args.device,
                                                 progress=True)
                out(Path(rec["weights"]), gen)
    for kind in ("uddn", "dae"):
        if kind in args.what:
            net, rec = uddn.load_denoiser(kind, config="full", device=args.device, progress=True)
            out(Path(rec["weights"]), net)
    if "gnr" in args.what:
        gen, rec = uddn.load_gnr(config="full", device=args.device, progress=True)
        out(Path(rec["weights"]), gen)
    return written


if __name__ == "__main__":
    main()
