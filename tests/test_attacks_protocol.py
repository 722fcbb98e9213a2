"""Every attack through the one protocol (rgd/attacks/protocol.py): called directly and run by
the evaluation cascade it breaks the same points, exactly the breakable ones of a linear model
whose optimal attack has a closed form (tests/test_attacks_linear.py); `init_slice` gives each
row the draws it gets in the whole batch; `loss_fn` replaces the loss of the attacks that take
one and is refused by the others; PGD as a training attack returns its last iterate."""
import numpy as np
import pytest
import tensorflow as tf

from rgd.attacks import initializers, losses, optimizers, projections, protocol, suites
from rgd.attacks.apgd import APGD, APGDTargeted
from rgd.attacks.fab import FABTargeted
from rgd.attacks.multitargeted import MultiTargeted
from rgd.attacks.pgd import PGD, pgd40_adam_margin
from rgd.attacks.square import Square
from rgd.errors import ConfigError
from rgd.evaluation import cascade, checks

from test_attacks_linear import clean_margin, optimal_gain, separated_problem

EPS = 0.006
ATTACKS = {
    "pgd40": lambda: pgd40_adam_margin("linf", EPS),
    "apgd-ce": lambda: APGD("linf", EPS, "ce", num_steps=6),
    "apgd-dlr": lambda: APGD("linf", EPS, "dlr", num_steps=6, num_restarts=2),
    "apgd-t": lambda: APGDTargeted("linf", EPS, num_steps=6, num_target_classes=1),
    "multitargeted": lambda: MultiTargeted("linf", EPS, num_steps=12, num_restarts=2,
                                           num_targets=1),
    "fab-t": lambda: FABTargeted("linf", EPS, num_steps=10, num_target_classes=1),
    "square": lambda: Square("linf", EPS, num_queries=300),
}
# Square is random search: it may leave a breakable point unbroken within its budget.
EXACT = set(ATTACKS) - {"square"}


@pytest.fixture(scope="module")
def problem():
  model, x, labels, w, margin = separated_problem(10, (EPS,))
  breakable = margin + optimal_gain(x, labels, w, "linf", EPS) > 0
  assert 0 < breakable.sum() < len(x)
  return model, x, labels, breakable


def _fooled(model, x_adv, labels):
  return losses.misclassified(model(x_adv), labels).numpy()


def _call(attack, model_fn, x, labels, seed, **kw):
  """The protocol's call in one tf.function (the loops of Square run much faster traced)."""
  fn = tf.function(lambda a, b, c: attack(model_fn, a, b, c, **kw))
  return fn(tf.constant(x), tf.constant(labels), tf.constant(seed)).numpy()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_breaks_the_same_points_called_directly_and_in_the_cascade(name, problem):
  model, x, labels, breakable = problem
  model_fn = lambda t: model(t, training=False)
  attack = ATTACKS[name]()
  assert isinstance(attack, protocol.Attack) and attack.name == name
  assert (attack.norm, attack.eps) == ("linf", EPS) and attack.num_runs(4) >= 1
  # The cascade's first stage draws from the seeds of [seed, 0] (rgd/evaluation/cascade.py).
  direct = _call(attack, model_fn, x, labels, [3, 0])
  out = cascade.run_cascade([attack], model_fn, x, labels, batch_size=8, seed=3)
  fooled = _fooled(model, direct, labels)
  dist = np.abs(direct - x).reshape(len(x), -1).max(1)
  assert dist.max() <= EPS + 1e-6 and direct.min() >= 0 and direct.max() <= 1
  np.testing.assert_array_equal(~out["robust"], fooled)
  np.testing.assert_allclose(out["x_adv"][fooled], direct[fooled], atol=1e-6)
  assert not fooled[~breakable].any()
  if name in EXACT:
    np.testing.assert_array_equal(fooled, breakable)
  else:
    assert fooled.any()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_init_slice_gives_each_row_its_draws_in_the_whole_batch(name, problem):
  """Two replicas' halves, each with init_slice, give the rows of the whole batch's call."""
  model, x, labels, _ = problem
  model_fn = lambda t: model(t, training=False)
  attack = ATTACKS[name]()
  whole = _call(attack, model_fn, x, labels, [5, 6])
  half = len(x) // 2
  parts = [_call(attack, model_fn, x[a:b], labels[a:b], [5, 6], init_slice=(a, len(x)))
           for a, b in ((0, half), (half, len(x)))]
  np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_loss_fn_replaces_the_loss_or_is_refused(name, problem):
  model, x, labels, _ = problem
  model_fn = lambda t: model(t, training=False)
  attack = ATTACKS[name]()
  x, labels = tf.constant(x), tf.constant(labels)
  away = lambda logits, y: -losses.margin_loss(logits, y)     # moves away from the boundary
  if not attack.takes_loss_fn:
    with pytest.raises(ConfigError, match="chooses its own loss"):
      attack(model_fn, x, labels, tf.constant([1, 2]), loss_fn=away)
    return
  toward = attack(model_fn, x, labels, tf.constant([1, 2])).numpy()
  back = attack(model_fn, x, labels, tf.constant([1, 2]), loss_fn=away).numpy()
  m0 = clean_margin(model, x.numpy(), labels.numpy())
  assert np.all(clean_margin(model, toward, labels.numpy()) > m0)
  # A point misclassified on the way keeps that point (the protocol); every other one ends
  # farther from the boundary than it started.
  kept = ~_fooled(model, back, labels)
  assert kept.sum() >= len(kept) // 2
  assert np.all(clean_margin(model, back, labels.numpy())[kept] < m0[kept])


def _training_pgd(steps, lr, eps=EPS, init=None):
  return PGD(optimizers.SignGradient(lr), steps, init, projections.project_fn("linf", eps),
             keep_best=False, norm="linf", eps=eps, name="trades")


def test_training_pgd_returns_the_last_iterate_by_hand(problem):
  """Margin ascent on the linear model: each sign step moves every free pixel by lr along
  sign(g), g = +-w; three steps of eps / 2 from x0 end at the vertex x0 + eps sign(g)
  clipped to the box. TRADES' KL from a small Gaussian start rises on soft targets."""
  model, x, labels, _ = problem
  w = model.layers[-1].get_weights()[0][:, 1].reshape(x.shape[1:])
  g = np.where(labels[:, None, None, None] == 0, w[None], -w[None])
  attack = _training_pgd(3, EPS / 2)
  assert attack.last_iterate and attack.num_runs(4) == 1
  model_fn = lambda t: model(t, training=False)
  got = attack(model_fn, tf.constant(x), tf.constant(labels), tf.constant([0, 0]),
               loss_fn=losses.margin_loss).numpy()
  expected = np.clip(x + EPS * np.sign(g), 0.0, 1.0)
  np.testing.assert_allclose(got, expected, atol=1e-7)
  # Soft targets (TRADES' KL against the clean prediction): no labels, no success tracking.
  # At x0 the KL and its gradient are 0, hence TRADES' start 0.001 * N(0, 1).
  attack = _training_pgd(3, EPS / 2, init=initializers.normal_init(1e-3))
  probs = tf.nn.softmax(model(x)).numpy()
  kl = attack(model_fn, tf.constant(x), tf.constant(probs), tf.constant([0, 0]),
              loss_fn=losses.kl_loss).numpy()
  assert np.all(losses.kl_loss(model(kl), probs).numpy() >
                losses.kl_loss(model(x), probs).numpy() + 1e-6)
  with pytest.raises(ConfigError, match="runs once"):
    PGD(optimizers.SignGradient(0.1), 1, keep_best=False, num_restarts=2)


def test_training_pgd_init_slice_draws_the_whole_batch_start(problem):
  """A training attack draws its start from the batch seed for the whole batch (stateless
  tf.random, as TRADES training always has): replica halves see the whole batch's rows."""
  model, x, labels, _ = problem
  model_fn = lambda t: model(t, training=False)
  attack = _training_pgd(2, EPS / 4, init=initializers.uniform_init("linf", EPS))
  seed = tf.constant([7, 8])
  probs = tf.nn.softmax(model(x))
  whole = attack(model_fn, tf.constant(x), probs, seed, loss_fn=losses.kl_loss).numpy()
  half = len(x) // 2
  parts = [attack(model_fn, tf.constant(x[a:b]), probs[a:b], seed, loss_fn=losses.kl_loss,
                  init_slice=(a, len(x))).numpy() for a, b in ((0, half), (half, len(x)))]
  np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)
  start = initializers.uniform_init("linf", EPS)(tf.zeros_like(x), seed)
  assert not np.allclose(whole, np.clip(x + start.numpy(), 0, 1))   # it moved


def test_stage_attributes_drive_the_checks():
  aa = suites.get_suite(suites.AUTOATTACK, "linf", 8 / 255)
  assert [s.black_box for s in aa] == [False, False, False, True]
  robust_after = [np.array([1, 1, 1, 1], bool), np.array([1, 1, 1, 0], bool),
                  np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool)]
  warned = checks.check_black_box(aa, robust_after)
  assert len(warned) == 1 and "square attack broke 1 point(s)" in warned[0]
  assert checks.check_black_box(aa, robust_after[:3] + [robust_after[2]]) == []
  assert checks.check_num_classes(10, aa) == []
  three = checks.check_num_classes(3, aa)
  assert [w.split()[0] for w in three] == ["apgd-t", "apgd-t", "fab-t"]
  assert "at least 4 classes" in three[1]


def test_the_cascade_refuses_a_stage_without_a_threat_model(problem):
  model, x, labels, _ = problem
  bare = PGD(optimizers.SignGradient(0.01), 2, loss_fn=losses.margin_loss)
  with pytest.raises(ConfigError, match="has no threat model"):
    cascade.run_cascade([bare], lambda t: model(t), x, labels, batch_size=8)
