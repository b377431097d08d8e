"""Deprecated: the attacks of AutoAttack now live in one file each, as in the reference code.

:mod:`advviz.attacks.apgd` (APGD-CE, APGD-DLR, APGD-T, the DLR losses), :mod:`advviz.attacks.fab`
(FAB-T) and :mod:`advviz.attacks.square` (Square). Every attack is also ``advviz.attacks.NAME``.
This module only re-exports their names for old imports and warns once when imported.
"""

from __future__ import annotations

import warnings

from advviz.attacks.apgd import apgd_ce, apgd_checkpoints, apgd_dlr, apgd_t, dlr_loss, dlr_loss_targeted
from advviz.attacks.fab import fab, project_hyperplane_box
from advviz.attacks.square import square, square_p

__all__ = ["apgd_ce", "apgd_dlr", "apgd_t", "apgd_checkpoints", "dlr_loss", "dlr_loss_targeted", "fab",
           "project_hyperplane_box", "square", "square_p"]

warnings.warn("advviz.attacks.autoattack is deprecated: import from advviz.attacks (apgd_ce, fab, square, ...) "
              "or from advviz.attacks.apgd / .fab / .square", DeprecationWarning, stacklevel=2)
