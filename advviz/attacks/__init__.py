"""Adversarial attacks: plain functions ``NAME(model, x, y, *, ...) -> x_adv`` and their registry.

Contract (every attack): ``x`` is ``(B, C, H, W)`` float in ``[0, 1]``; budgets are on the
``[0, 1]`` scale (a value above 1 raises, saying to divide by 255); the result is detached,
of ``x``'s shape, dtype and device, inside its budget and ``[0, 1]``; ``x`` is never modified;
the model's ``training`` flag, every parameter's ``requires_grad`` and ``.grad`` are left
exactly as they were; randomness is seeded by ``seed=``.
"""

from advviz.attacks._api import AttackSpec, get, list_attacks, register_attack
from advviz.attacks._fast import fast_model, fast_models
from advviz.attacks.apgd import apgd_ce, apgd_dlr, apgd_t, dlr_loss, dlr_loss_targeted
from advviz.attacks.cfr import CFRResult, cfr, cfr_attack
from advviz.attacks.cw import cw_l2
from advviz.attacks.deepfool import deepfool
from advviz.attacks.fab import fab
from advviz.attacks.gradient import bim, difgsm, fgsm, mdi2fgsm, mifgsm, pgd, pgd_l2
from advviz.attacks.jsma import jsma
from advviz.attacks.one_pixel import one_pixel
from advviz.attacks.patch import adversarial_patch, lavan
from advviz.attacks.square import square
from advviz.attacks.trajectory import Frame, Trajectory, record
from advviz.attacks.universal import universal, universal_perturbation

__all__ = ["AttackSpec", "get", "list_attacks", "register_attack"]
__all__ += ["fgsm", "bim", "mifgsm", "difgsm", "mdi2fgsm", "pgd", "pgd_l2", "cw_l2", "deepfool", "fast_model", "fast_models"]
__all__ += ["jsma", "one_pixel", "adversarial_patch", "lavan", "universal", "universal_perturbation"]
__all__ += ["cfr", "cfr_attack", "CFRResult"]
__all__ += ["record", "Trajectory", "Frame"]
__all__ += ["apgd_ce", "apgd_dlr", "apgd_t", "dlr_loss", "dlr_loss_targeted", "fab", "square"]
