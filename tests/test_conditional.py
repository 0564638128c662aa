"""Conditional problems through learning and evaluation: the KID loss on features joined with the
labels against a NumPy KID, samples drawn for the conditions they are compared with, a guided
sampler with learned weights learned and its start chosen among guided candidates, and the
settings that guide."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddss_jax import make_problem, samplers
from ddss_jax.evaluation import drawing, held_out
from ddss_jax.learn import ddss, kid_loss
from ddss_jax.problems.base import held_out_conditions
from ddss_jax.samplers import schedules
from ddss_jax.settings import EvalConfig, SamplerConfig, TrainConfig
from ddss_jax.util.errors import ConfigError

SCHED = schedules.linear_beta(1000)
MEANS = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 0.0]])  # class 0, class 1, "no class" (2)
VAR = 0.05  # each class's variance per coordinate


def gaussian_eps(params, x, t, label):
  """The exact eps of x0 ~ N(MEANS[label], VAR I) under SCHED at integer-valued t."""
  del params
  alpha_bar = jnp.asarray(SCHED.alpha_bars, jnp.float32)[jnp.round(t).astype(jnp.int32)][:, None]
  mean = jnp.asarray(MEANS, jnp.float32)[label]
  sigma = jnp.sqrt(1.0 - alpha_bar)
  return sigma * (x - jnp.sqrt(alpha_bar) * mean) / (alpha_bar * VAR + sigma ** 2)


def two_class_data(n, seed):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 2
  return (MEANS[labels] + np.sqrt(VAR) * rng.normal(size=(n, 2))).astype(np.float32), labels


def problem():
  data, labels = two_class_data(400, 0)
  eval_data, eval_labels = two_class_data(60, 1)
  return make_problem(model_params={}, data=data, eps_fn=gaussian_eps,
                      features=lambda p, x: x, eval_data=eval_data, cond=labels,
                      eval_cond=eval_labels, null_cond=np.int32(2), kid_subset_size=30)


def numpy_kid(a, b):
  """Unbiased KID with k(x, y) = (x.y / d + 1)^3, in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  k = lambda x, y: (x @ y.T / a.shape[1] + 1.0) ** 3
  off = lambda m: (m.sum() - np.trace(m)) / (len(m) * (len(m) - 1))
  return off(k(a, a)) + off(k(b, b)) - 2.0 * k(a, b).mean()


def nearest_class(x):
  return np.argmin(np.linalg.norm(np.asarray(x)[:, None] - MEANS[None, :2], axis=-1), axis=1)


def test_real_batches_carry_their_own_labels_and_independent_sample_labels():
  p = problem()
  real = kid_loss.conditioned_batch_fn(p)(jax.random.PRNGKey(3), 32)
  np.testing.assert_array_equal(nearest_class(real["x"]), real["cond"])
  other = p.conditioning.real(jax.random.fold_in(jax.random.PRNGKey(3), 1), 32)
  np.testing.assert_array_equal(real["sample_cond"], other)
  assert np.any(real["sample_cond"] != real["cond"])
  rows = kid_loss.conditioned_batch_fn(p)(jax.random.PRNGKey(3), 32, slice(8, 16))
  for name in ("cond", "sample_cond"):
    np.testing.assert_array_equal(rows[name], real[name][8:16])


def test_conditional_kid_loss_equals_numpy_kid_of_joined_features():
  p = problem()
  sampler = samplers.make("ddim", SCHED, 4, stride="linear")
  real = kid_loss.conditioned_batch_fn(p)(jax.random.PRNGKey(3), 32)
  key = jax.random.PRNGKey(4)
  loss = kid_loss.make_loss_fn(sampler, p, 32, conditional="joined")({}, {}, None, real, key)
  draw = lambda labels: np.asarray(sampler.sample(
      {}, lambda x, t, c: gaussian_eps({}, x, t, c), key, (32, 2), cond=jnp.asarray(labels)))
  samples = draw(real["sample_cond"])
  # The samples land on the means of the labels they were drawn for.
  np.testing.assert_array_equal(nearest_class(samples), real["sample_cond"])
  data = np.asarray(p.real_batch(jax.random.PRNGKey(0), 400), np.float64)
  scale = np.sqrt(np.mean(np.sum(data ** 2, axis=-1)))
  join = lambda x, c: np.concatenate([x, scale * np.eye(2)[c]], axis=1)
  real_side = join(real["x"], real["cond"])
  want = numpy_kid(join(samples, real["sample_cond"]), real_side)
  np.testing.assert_allclose(float(loss), want, rtol=2e-3, atol=1e-5)
  # Samples drawn for the other label cost more than those drawn for their own.
  wrong = numpy_kid(join(draw(1 - real["sample_cond"]), real["sample_cond"]), real_side)
  assert wrong > want + 0.5


def test_kid_within_classes_loss_equals_numpy_per_class_kids():
  p = problem()
  sampler = samplers.make("ddim", SCHED, 4, stride="linear")
  batch_fn = kid_loss.conditioned_batch_fn(p)
  real = batch_fn(jax.random.PRNGKey(3), 32)
  key = jax.random.PRNGKey(4)
  loss_fn = kid_loss.make_loss_fn(sampler, p, 32)
  samples = np.asarray(sampler.sample({}, lambda x, t, c: gaussian_eps({}, x, t, c), key,
                                      (32, 2), cond=jnp.asarray(real["sample_cond"])))
  per_class = lambda a, ca, b, cb: np.mean([numpy_kid(a[ca == c], b[cb == c]) for c in (0, 1)])
  want = per_class(samples, real["sample_cond"], real["x"], real["cond"])
  np.testing.assert_allclose(float(loss_fn({}, {}, None, real, key)), want, rtol=2e-3,
                             atol=1e-5)
  bank = kid_loss.make_reference(p, None, size=100, seed=9)
  bank_x = np.asarray(p.real_batch(jax.random.PRNGKey(9), 100))
  bank_labels = np.asarray(p.conditioning.real(jax.random.PRNGKey(9), 100))
  np.testing.assert_allclose(float(loss_fn({}, {}, None, real, key, bank)),
                             per_class(samples, real["sample_cond"], bank_x, bank_labels),
                             rtol=2e-3, atol=1e-5)


def test_evaluation_draws_for_the_held_out_labels():
  p = problem()
  seen = []

  def record(samples, cond):
    seen.append((np.asarray(samples), np.asarray(cond)))
    return {"n": float(len(samples))}

  p = dataclasses.replace(p, evaluate=record)
  sampler = samplers.make("ddim", SCHED, 4, stride="linear")
  held_out.evaluate_samplers({"baseline": (sampler, {})}, p,
                             evaluation=EvalConfig(num_samples=90, batch_size=40))
  (samples, cond), (data, data_cond) = seen
  np.testing.assert_array_equal(cond, held_out_conditions(p.conditioning, 90))
  np.testing.assert_array_equal(cond[60:], p.conditioning.held_out[:30])
  for x, c in ((samples, cond), (data, data_cond)):
    np.testing.assert_array_equal(nearest_class(x), c)


def test_a_drawing_resumed_at_a_batch_yields_the_batches_a_whole_drawing_does():
  p = problem()
  sampler = samplers.make("ddim", SCHED, 4, stride="linear")
  conds = held_out_conditions(p.conditioning, 90)
  draw = lambda first: list(drawing.sample_batches(
      sampler, {}, p, num_samples=90, batch_size=40, seed=3, conds=conds, first_batch=first))
  whole, resumed = draw(0), draw(1)
  assert [len(b) for b in whole] == [40, 40, 10] and len(resumed) == 2
  for a, b in zip(whole[1:], resumed):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(nearest_class(np.concatenate(resumed)), conds[40:])


@pytest.mark.parametrize("start", ["configured", "select_noise_free"])
def test_learns_guidance_weights_of_a_conditional_problem(tmp_path, start):
  p = problem()
  cfg = SamplerConfig(family="ggdm+pred+time", num_steps=3, stride="linear",
                      guidance="learned", guidance_weight=2.0, start=start)
  train = TrainConfig(num_train_steps=3, batch_size=16, learning_rate=0.05, log_every_steps=1,
                      validate_every_steps=3, validation_size=40, validation_samples=50)
  learned = ddss.learn_sampler(p, sampler=cfg, train=train, workdir=str(tmp_path),
                               progress=False)
  assert learned.sampler.guidance == cfg.guidance_of()
  weights = np.asarray(learned.last_params["guidance"])
  assert weights.shape == (3,) and np.all(np.isfinite(weights))
  assert np.max(np.abs(weights - 2.0)) > 1e-3  # the weights moved
  assert all(np.isfinite(line["val/fid"]) for line in learned.history if "val/fid" in line)


def test_guidance_settings():
  assert SamplerConfig().guidance_of() is None
  fixed = SamplerConfig(guidance="fixed", guidance_weight=3.0, guidance_sigma_min=0.3)
  guidance = fixed.guidance_of()
  assert (guidance.weight, guidance.interval, guidance.learn) == (3.0, (0.3, math.inf), False)
  learned = SamplerConfig(guidance="learned", guidance_sigma_max=2.0)
  assert learned.guidance_of().learn and not learned.guidance_of(learn=False).learn
  assert learned.guidance_of().interval == (0.0, 2.0)
  with pytest.raises(ConfigError, match="guidance_sigma_max.*guidance_sigma_min=3"):
    SamplerConfig(guidance="fixed", guidance_sigma_min=3.0, guidance_sigma_max=2.0)
  with pytest.raises(ConfigError, match="sampler.guidance.*'none', 'fixed', 'learned'"):
    SamplerConfig(guidance="always")


def test_conditional_problem_errors():
  data, labels = two_class_data(40, 0)
  common = dict(model_params={}, data=data, eps_fn=gaussian_eps, features=lambda p, x: x)
  with pytest.raises(ValueError, match="leading axis 40"):
    make_problem(**common, cond=labels[:30], eval_cond=labels)
  with pytest.raises(ValueError, match="eval_cond="):
    make_problem(**common, cond=labels)
  with pytest.raises(ValueError, match="pass cond="):
    make_problem(**common, null_cond=2)
  with pytest.raises(ValueError, match="cond_embed="):
    make_problem(**common, cond=labels.astype(np.float32), eval_cond=labels)
  embedded = make_problem(model_params={}, data=data, features=lambda p, x: x,
                          eps_fn=lambda params, x, t, c: x * c[:, None],
                          cond=labels.astype(np.float32), eval_cond=labels,
                          cond_embed=lambda c: c[:, None])
  with pytest.raises(ValueError, match="have no classes.*use 'joined'"):
    kid_loss.make_loss_fn(samplers.make("ddim", SCHED, 3), embedded, 4)
  unconditional = make_problem(model_params={}, data=data, features=lambda p, x: x,
                               eps_fn=lambda params, x, t: x)
  guided = samplers.make("ddim", SCHED, 3, guidance=SamplerConfig(
      guidance="fixed").guidance_of())
  with pytest.raises(ValueError, match="needs a conditional model"):
    held_out.drawing.generate(guided, unconditional, {}, {}, jax.random.PRNGKey(0), 4,
                              cond=jnp.zeros(4, jnp.int32))


def test_config_refuses_guidance_of_an_unconditional_problem():
  from configs import mnist_guided, tiny  # pylint: disable=import-outside-toplevel
  from ddss_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.sampler.guidance = "fixed"
  with pytest.raises(ConfigError, match="sampler.guidance.*problem 'toy2d' is unconditional"):
    config_lib.validate(config)
  config = mnist_guided.get_config()
  config.loss.name = "teacher"
  with pytest.raises(ConfigError, match="loss.name.*conditional as configured"):
    config_lib.validate(config)
  config_lib.validate(mnist_guided.get_config())


@pytest.mark.slow
def test_the_conditional_mnist_problem_scores_real_digits_as_their_labels():
  """The held-out digits, scored as samples drawn for their own labels: the shipped
  classifier's accuracy (98.1% on them), FID 0 against themselves; the labels of a real batch
  are its digits'; the evaluation's labels are the held-out ones, ten of each class first."""
  from ddss_jax.configs import mnist_guided  # pylint: disable=import-outside-toplevel
  from ddss_jax import run as run_lib  # pylint: disable=import-outside-toplevel
  from ddss_jax.data import mnist as mnist_data  # pylint: disable=import-outside-toplevel
  config = mnist_guided.get_config()
  p = run_lib.build_problem(config, SCHED, "/tmp")
  images, labels = mnist_data.load("test")
  held = p.conditioning.held_out
  np.testing.assert_array_equal(np.sort(held), np.sort(labels))
  np.testing.assert_array_equal(held[:20], np.tile(np.arange(10), 2))
  result = p.evaluate(images, labels)
  assert result["class_accuracy"] == pytest.approx(0.981, abs=0.006)
  assert result["class_accuracy_std"] == pytest.approx(
      np.sqrt(result["class_accuracy"] * (1 - result["class_accuracy"]) / 1000))
  assert abs(result["fid"]) < 1e-3 and abs(result["class_fid"]) < 1e-3
  key = jax.random.PRNGKey(7)
  train_images, train_labels = mnist_data.load("train")
  batch, batch_labels = p.real_batch(key, 50), p.conditioning.real(key, 50)
  for image, label in zip(batch, batch_labels):
    (row,) = np.flatnonzero(np.all(train_images == image, axis=(1, 2, 3)))[:1]
    assert train_labels[row] == label
