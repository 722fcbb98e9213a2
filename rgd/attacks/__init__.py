"""Attacks built from composable parts, all called one way (rgd/attacks/protocol.py):

    x_adv = attack(model_fn, images, labels, seed, *, loss_fn=None, init_slice=None)

Parts: `losses` (ce, margin, dlr, targeted dlr, kl), `initializers` (zero, uniform in the ball,
normal), `projections` (Linf, L2, the [0, 1] box), `optimizers` (sign, L2-normalised, Adam).
Attacks: `PGD` (training: last iterate; validation: PGD-40), `APGD`, `APGDTargeted`,
`MultiTargeted`, `FABTargeted`, `Square`; `suites` composes them into the suites rgd.evaluate
runs (aa+mt, autoattack, pgd40). Everything works on images in [0, 1] and float32 logits.
"""
from rgd.attacks import initializers, losses, optimizers, projections
from rgd.attacks.protocol import Attack, run_until_fooled
from rgd.attacks.pgd import PGD, loss_and_grad, pgd40_adam_margin
from rgd.attacks.apgd import APGD, APGDTargeted
from rgd.attacks.fab import FABTargeted
from rgd.attacks.multitargeted import MultiTargeted
from rgd.attacks.square import Square
from rgd.attacks import suites
