"""Adversarial attacks: plain functions ``NAME(model, x, y, *, ...) -> x_adv`` and their registry.

Contract (every attack): ``x`` is ``(B, C, H, W)`` float in ``[0, 1]``; budgets are on the
``[0, 1]`` scale (a value above 1 raises, saying to divide by 255); the result is detached,
of ``x``'s shape, dtype and device, inside its budget and ``[0, 1]``; ``x`` is never modified;
the model's ``training`` flag, every parameter's ``requires_grad`` and ``.grad`` are left
exactly as they were; randomness is seeded by ``seed=``.
"""

from advviz.attacks._api import AttackSpec, get, list_attacks, register_attack

__all__ = ["AttackSpec", "get", "list_attacks", "register_attack"]
