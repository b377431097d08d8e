"""Generative attacks: TSGAN (two-stage WGAN-GP with content loss), AdvGAN, and FID.

* :mod:`advviz.generative.tsgan` — Liu et al. 2020 (paper 000): :class:`TSGAN`, its losses and
  the VGG-16 content network.
* :mod:`advviz.generative.advgan` — Xiao et al. 2018: :class:`AdvGAN`.
* :mod:`advviz.generative.fid` — Fréchet distance between feature statistics.
* :mod:`advviz.generative.wgan` — the WGAN-GP gradient penalty (TSGAN's and GNR's critics).
"""

from advviz.generative.tsgan import CONFIGS, TSGAN, TSGANConfig, content_network
from advviz.generative.wgan import gradient_penalty

__all__ = ["CONFIGS", "TSGAN", "TSGANConfig", "content_network", "gradient_penalty"]
