"""Attacks built from composable parts (see rgd/attacks/pgd.py for the pattern).

Parts: `losses` (ce, margin, dlr, targeted dlr, kl), `initializers` (zero, uniform in the ball,
normal), `projections` (Linf, L2, the [0, 1] box), `optimizers` (sign, L2-normalised, Adam).
Attacks: `PGD`, `Restarts`. Everything works on images in [0, 1] and float32 logits.
"""
from rgd.attacks import initializers, losses, optimizers, projections
from rgd.attacks.pgd import PGD, Restarts, loss_and_grad, pgd40_adam_margin
# Evaluation attacks (`attack(model_fn, x, labels, seed) -> x_adv`); rgd.evaluation runs them as
# cascades (suites, batching over survivors, reports).
from rgd.attacks.apgd import APGD, APGDTargeted
from rgd.attacks.fab import FABTargeted
from rgd.attacks.multitargeted import MultiTargeted
from rgd.attacks.square import Square
