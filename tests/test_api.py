"""The Python API: the README's Python example runs as written; the API learns exactly what the
command line learns; data as an iterator; settings checked when built; workdir resume."""

import dataclasses
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ddss_jax
from configs import tiny
from ddss_jax import run as run_lib, samplers
from ddss_jax.learn import ddss, kid_loss, select, validation
from ddss_jax.problems import toy2d as toy2d_problem
from ddss_jax.samplers import schedules
from ddss_jax.settings import from_group
from ddss_jax.util.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_example(heading: str = "## Use it from Python", page: str = "README.md") -> str:
  """The first Python block under `heading` in `page` (a path from the repository root)."""
  with open(os.path.join(ROOT, page), encoding="utf-8") as f:
    text = f.read()
  section = text[text.index(heading):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs(capsys):
  scope = {}
  exec(compile(python_example(), "README.md", "exec"), scope)  # pylint: disable=exec-used
  learned, results = scope["learned"], scope["results"]
  assert learned.train_steps == 10
  assert [line["step"] for line in learned.history] == [5, 10]
  assert set(results) == {"learned", "data"}
  assert all(np.isfinite(results["learned"][m]) for m in ("kid", "fid", "precision", "recall"))
  assert results["learned"]["fid"] > results["data"]["fid"]  # 10 steps do not reach the data
  assert scope["x0"].shape == (16, 32, 32, 1)
  out = capsys.readouterr()
  assert "DDSS step 10/10" in out.err and "steps/s" in out.err
  # When compilation starts and how long it took, before the first rate.
  assert out.err.index("compiling the training step") < out.err.index("compiled and ran in") \
      < out.err.index("steps/s")
  assert samplers.load("/tmp/my_sampler.json")[0].num_steps == 5


@pytest.mark.slow
@pytest.mark.parity
def test_the_deploy_example_runs():
  pytest.importorskip("torch", reason="the deploy example needs torch: pip install -e "
                      "'.[diffusers]'")
  pytest.importorskip("diffusers", reason="the deploy example needs diffusers")
  scope = {}
  code = python_example("## End to end: the MNIST UNet in diffusers", "docs/deploy.md")
  exec(compile(code, "docs/deploy.md", "exec"), scope)  # pylint: disable=exec-used
  images = scope["images"]
  assert images.shape == (4, 32, 32, 1) and 0 <= images.min() and images.max() <= 1
  assert 0.2 < images.std()  # digits on a dark background, not a blank
  assert scope["pipe"].scheduler.spec.family == "ggdm+pred+time"


@pytest.mark.slow
def test_the_bring_your_own_model_example_runs(capsys):
  scope = {}
  code = python_example("## An example", "docs/bring_your_own_model.md")
  exec(compile(code, "docs/bring_your_own_model.md", "exec"), scope)  # pylint: disable=exec-used
  learned, x0, model = scope["learned"], np.asarray(scope["x0"]), scope["model"]
  assert learned.train_steps == 100 and model.schedule.name == "sigma_denoiser"
  # The exact denoiser of N(0.5, 0.2^2): 4 steps of DDIM shrink the spread to 0.08; the learned
  # 4 steps reach the data's (0.207 measured).
  np.testing.assert_allclose(x0.mean(axis=0), 0.5, atol=0.03)
  np.testing.assert_allclose(x0.std(axis=0), 0.2, atol=0.03)
  assert np.asarray(scope["ddim"]).std() < 0.1
  sigmas = np.asarray(model.model_time(learned.sampler.timesteps(learned.params)))
  assert np.all(np.diff(sigmas) < 0) and 0.002 <= sigmas[-1] and sigmas[0] <= 80.0
  assert "DDSS step 100/100" in capsys.readouterr().err


def _toy_problem(config, workdir):
  schedule = schedules.make(config.schedule.name, config.schedule.num_timesteps)
  return toy2d_problem.build(from_group(toy2d_problem.Config, config.toy2d), schedule,
                             seed=config.train.seed, workdir=workdir)


@pytest.mark.slow
def test_the_api_learns_what_the_command_line_learns(tmp_path):
  config = tiny.get_config()
  run_lib.train_and_evaluate(config, str(tmp_path / "cli"))
  cli_sampler, cli_params = samplers.load(str(tmp_path / "cli" / "sampler.json"))
  learned = ddss_jax.learn_sampler(
      _toy_problem(config, str(tmp_path / "api")),
      sampler=from_group(ddss_jax.SamplerConfig, config.sampler),
      train=from_group(ddss_jax.TrainConfig, config.train), progress=False)
  assert learned.sampler.family == cli_sampler.family
  for name, value in learned.params.items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(cli_params[name]))


@pytest.mark.slow
def test_resume_from_a_workdir_equals_a_straight_run(tmp_path):
  config = tiny.get_config()
  problem = _toy_problem(config, str(tmp_path / "model"))
  settings = dict(sampler=ddss_jax.SamplerConfig(num_steps=3), progress=False)
  train = lambda steps: ddss_jax.TrainConfig(num_train_steps=steps, batch_size=16,
                                             log_every_steps=1, checkpoint_every_steps=1)
  straight = ddss_jax.learn_sampler(problem, train=train(4), **settings)
  ddss_jax.learn_sampler(problem, train=train(2), workdir=str(tmp_path / "run"), **settings)
  resumed = ddss_jax.learn_sampler(problem, train=train(4), workdir=str(tmp_path / "run"),
                                   **settings)
  assert resumed.train_steps == 4
  assert [line["step"] for line in resumed.history] == [1, 2, 3, 4]
  assert [line["train/kid"] for line in resumed.history] == [
      line["train/kid"] for line in straight.history]
  for name, value in straight.params.items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(resumed.params[name]))


@pytest.mark.slow
def test_data_as_an_iterator_and_a_feature_function():
  rng = np.random.default_rng(0)
  batches = (rng.normal(size=(5, 2)).astype(np.float32) for _ in range(20))
  problem = ddss_jax.make_problem(
      eps_fn=lambda params, x, t: params["scale"] * x, model_params={"scale": np.float32(0.5)},
      data=batches, features=lambda params, x: x @ params, feature_params=np.eye(2, 3,
                                                                                 dtype=np.float32),
      eval_data=rng.normal(size=(64, 2)).astype(np.float32))
  assert problem.example_shape == (2,)
  learned = ddss_jax.learn_sampler(
      problem, sampler=ddss_jax.SamplerConfig(family="ggdm", num_steps=2),
      train=ddss_jax.TrainConfig(num_train_steps=3, batch_size=8, log_every_steps=3),
      progress=False)
  assert learned.train_steps == 3 and np.isfinite(learned.history[-1]["train/kid"])
  results = ddss_jax.evaluate_samplers(
      {"learned": (learned.sampler, learned.params)}, problem,
      evaluation=ddss_jax.EvalConfig(num_samples=32, batch_size=16, reference_steps=0))
  assert np.isfinite(results["learned"]["fid"])
  # 3 steps of 8 and the data row's 32 took 56 of the 100 examples: the sixth step more runs out.
  with pytest.raises(ValueError, match="the iterator ran out after 100 examples; 8 more"):
    ddss_jax.learn_sampler(problem, train=ddss_jax.TrainConfig(num_train_steps=10, batch_size=8),
                           progress=False)


def test_bad_input_is_named_before_anything_runs():
  with pytest.raises(ConfigError, match=r"config.train.batch_size=1: must be an integer >= 2"):
    ddss_jax.TrainConfig(batch_size=1)
  with pytest.raises(ConfigError, match=r"config.sampler.family='ddim\+x': valid choices"):
    ddss_jax.SamplerConfig(family="ddim+x")
  with pytest.raises(ValueError, match="exactly one of eps_fn"):
    ddss_jax.make_problem(model_params={}, data=np.zeros((4, 2)), features=lambda p, x: x)
  with pytest.raises(ValueError, match=r"features='vgg'; valid built-in feature networks"):
    ddss_jax.make_problem(eps_fn=lambda p, x, t: x, model_params={}, data=np.zeros((4, 2)),
                          features="vgg")
  problem = ddss_jax.make_problem(eps_fn=lambda p, x, t: x, model_params={},
                                  data=np.zeros((4, 2), np.float32), features=lambda p, x: x)
  with pytest.raises(ConfigError, match="config.sampler.family='ddim': has nothing to learn"):
    ddss_jax.learn_sampler(problem, sampler=ddss_jax.SamplerConfig(family="ddim"))
  with pytest.raises(ValueError, match="has no held-out evaluation: pass eval_data"):
    ddss_jax.evaluate_samplers({}, problem)
  with pytest.raises(ConfigError, match="config.loss.teacher_dir=None: the teacher loss caches"):
    ddss_jax.learn_sampler(problem, loss=ddss_jax.LossConfig(name="teacher"))
  assert jax.device_count() >= 1


def test_non_finite_data_and_wrong_shapes_are_named_before_anything_compiles():
  good = np.zeros((6, 2), np.float32)
  bad = good.copy()
  bad[[1, 4], 0] = [np.nan, np.inf]
  common = dict(eps_fn=lambda p, x, t: x, model_params={}, features=lambda p, x: x)
  with pytest.raises(ValueError, match=r"make_problem: data: rows 1, 4 of 6 examples hold NaN "
                                       r"or inf"):
    ddss_jax.make_problem(data=bad, **common)
  with pytest.raises(ValueError, match=r"make_problem: eval_data: rows 1, 4 of 6 examples"):
    ddss_jax.make_problem(data=good, eval_data=bad, **common)
  batches = iter([good, good[:3], bad])  # the bad batch's rows are examples 10 and 13
  problem = ddss_jax.make_problem(data=batches, **common)
  with pytest.raises(ValueError, match=r"data \(an iterator\): rows 10, 13 of 6 examples"):
    problem.real_batch(None, 12)
  with pytest.raises(ValueError, match=r"the model maps x of shape \(2, 2\) to \(2, 1\); it "
                                       r"must return eps"):
    ddss_jax.make_problem(data=good, **(common | dict(eps_fn=lambda p, x, t: x[:, :1])))
  with pytest.raises(ValueError, match=r"the feature function maps x of shape \(2, 2\) to "
                                       r"\(2,\); it must return features \[B, D\]"):
    ddss_jax.make_problem(data=good, **(common | dict(features=lambda p, x: x[:, 0])))
  with pytest.raises(ValueError, match=r"the features of eval_data: row 2 of 6 features hold"):
    ddss_jax.make_problem(data=good, eval_data=good + np.arange(6)[:, None],
                          **(common | dict(features=lambda p, x: 1.0 / (x - 2.0))))
  problem = ddss_jax.make_problem(data=good + np.arange(6)[:, None],
                                  **(common | dict(features=lambda p, x: jnp.log(x - 2.0))))
  with pytest.raises(ValueError, match=r"the KID loss's bank: the features of 6 training "
                                       r"examples drawn with seed 0: rows .* of 6 features hold"):
    kid_loss.make_reference(problem, None, size=6, seed=0)


@pytest.mark.slow
def test_averaged_parameters_and_a_real_feature_bank(tmp_path):
  """The optimisation levers end to end: an EMA of the iterates is what comes back (and gets
  saved), the last iterate beside it; the KID loss against a fixed bank of real features."""
  config = tiny.get_config()
  problem = _toy_problem(config, str(tmp_path / "model"))
  learned = ddss_jax.learn_sampler(
      problem, sampler=ddss_jax.SamplerConfig(num_steps=3),
      train=ddss_jax.TrainConfig(num_train_steps=4, batch_size=16, log_every_steps=1,
                                 ema_decay=0.5, lr_schedule="cosine", warmup_steps=1,
                                 accumulate_steps=2),
      loss=ddss_jax.LossConfig(kid_bank_size=200), progress=False)
  assert [line["train/learning_rate"] for line in learned.history] == pytest.approx(
      [0.0, 0.0, 5e-3, 5e-3])
  assert all(np.isfinite(line["train/kid"]) for line in learned.history)
  init = learned.sampler.init()
  assert any(not np.allclose(learned.last_params[n], init[n]) for n in init)  # it moved
  for name in init:
    last, average = np.asarray(learned.last_params[name]), np.asarray(learned.params[name])
    # two updates: the first at learning rate 0, so average = 0.5 init + 0.5 last
    np.testing.assert_allclose(average, 0.5 * np.asarray(init[name]) + 0.5 * last, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.slow
def test_validation_keeps_the_best_parameters_and_a_resumed_run_keeps_them_too(tmp_path):
  config = tiny.get_config()
  problem = _toy_problem(config, str(tmp_path / "model"))
  train = lambda steps: ddss_jax.TrainConfig(
      num_train_steps=steps, batch_size=16, log_every_steps=2, checkpoint_every_steps=2,
      validate_every_steps=2, validation_size=100, validation_samples=64, select_on="kid")
  settings = dict(sampler=ddss_jax.SamplerConfig(num_steps=3), progress=False)
  straight = ddss_jax.learn_sampler(problem, train=train(6), **settings)
  val = [line for line in straight.history if "val/kid" in line]
  assert [line["step"] for line in val] == [0, 2, 4, 6]  # the start is a candidate too
  best = min(val, key=lambda line: line["val/kid"])
  assert straight.best_step == best["step"] == val[-1]["val/best_step"]
  workdir = str(tmp_path / "run")
  ddss_jax.learn_sampler(problem, train=train(4), workdir=workdir, **settings)
  resumed = ddss_jax.learn_sampler(problem, train=train(6), workdir=workdir, **settings)
  assert resumed.best_step == straight.best_step
  saved = samplers.load(os.path.join(workdir, "sampler_best.json"))[1]
  for name, value in straight.params.items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(resumed.params[name]))
    np.testing.assert_array_equal(np.asarray(value), np.asarray(saved[name]))


@pytest.mark.slow
def test_score_on_validation_gives_the_kept_parameters_their_logged_score(tmp_path):
  config = tiny.get_config()
  train = ddss_jax.TrainConfig(num_train_steps=4, batch_size=16, log_every_steps=2,
                               validate_every_steps=2, validation_size=100,
                               validation_samples=64)
  learned = ddss_jax.learn_sampler(_toy_problem(config, str(tmp_path / "model")),
                                   sampler=ddss_jax.SamplerConfig(num_steps=3), train=train,
                                   progress=False)
  logged = {line["step"]: line["val/fid"] for line in learned.history if "val/fid" in line}
  assert len(set(logged.values())) == 3  # steps 0, 2, 4 score differently
  # A freshly built problem and the saved sampler file, as a later command would score them.
  path = str(tmp_path / "sampler.json")
  learned.save(path)
  sampler, params = samplers.load(path)
  scored = ddss_jax.score_on_validation(sampler, params, _toy_problem(config, str(tmp_path / "m2")),
                                   train=train)
  np.testing.assert_allclose(scored["fid"], logged[learned.best_step], rtol=1e-5)
  other = ddss_jax.score_on_validation(sampler, learned.last_params,
                                  _toy_problem(config, str(tmp_path / "m2")), train=train)
  np.testing.assert_allclose(other["fid"], logged[4], rtol=1e-5)
  # Draw 0 is the run's own noise (seed train.seed + 5); draw 1 other samples (seed + 1005).
  problem = _toy_problem(config, str(tmp_path / "m2"))
  own = ddss_jax.score_on_validation(sampler, params, problem, train=train, first_draw=0)
  redrawn = ddss_jax.score_on_validation(sampler, params, problem, train=train, first_draw=1)
  np.testing.assert_allclose(own["fid"], scored["fid"], rtol=1e-6)
  assert abs(redrawn["fid"] - scored["fid"]) > 1e-4 * scored["fid"]
  # train.validation_draws = 2: the mean of those two draws, as a run's validations take it.
  two = ddss_jax.score_on_validation(sampler, params, problem,
                                train=dataclasses.replace(train, validation_draws=2))
  for metric in ("fid", "kid"):
    np.testing.assert_allclose(two[metric], (own[metric] + redrawn[metric]) / 2, rtol=1e-6)
  # Each draw alone, whatever train.validation_draws says.
  per_draw = ddss_jax.score_draws_on_validation(
      sampler, params, problem, train=dataclasses.replace(train, validation_draws=3), draws=2)
  assert len(per_draw) == 2
  for got, want in zip(per_draw, (own, redrawn)):
    for metric in ("fid", "kid"):
      np.testing.assert_allclose(got[metric], want[metric], rtol=1e-6)


@pytest.mark.slow
def test_choose_on_validation_keeps_the_lowest_mean_over_the_draws(tmp_path):
  config = tiny.get_config()
  problem = _toy_problem(config, str(tmp_path / "model"))
  train = ddss_jax.TrainConfig(num_train_steps=4, batch_size=16, log_every_steps=2,
                               validation_size=100, validation_samples=64)
  runs = [ddss_jax.learn_sampler(problem, sampler=ddss_jax.SamplerConfig(num_steps=3, stride=s),
                                 train=train, progress=False) for s in ("quadratic", "linear")]
  chosen = ddss_jax.choose_on_validation(runs, problem, train=train, draws=3)
  # Each draw as score_on_validation gives it; the means as a run's 3-draw validation takes them.
  for run, fids in zip(runs, chosen.fids):
    for draw, fid in enumerate(fids):
      np.testing.assert_allclose(fid, ddss_jax.score_on_validation(
          run.sampler, run.params, problem, train=train, first_draw=draw)["fid"], rtol=1e-6)
  for run, mean in zip(runs, chosen.means):
    np.testing.assert_allclose(mean, ddss_jax.score_on_validation(
        run.sampler, run.params, problem,
        train=dataclasses.replace(train, validation_draws=3))["fid"], rtol=1e-6)
  assert len(set(chosen.means)) == 2 and chosen.kept == int(np.argmin(chosen.means))
  # In either order the same run wins; a tie keeps the first.
  assert ddss_jax.choose_on_validation(runs[::-1], problem, train=train,
                                       draws=3).kept == 1 - chosen.kept
  assert ddss_jax.choose_on_validation([runs[1], runs[1]], problem, train=train,
                                       draws=1).kept == 0
  with pytest.raises(ValueError, match="validation splits or samples would differ"):
    ddss_jax.choose_on_validation(runs, problem, train=[train, dataclasses.replace(train, seed=1)])
  with pytest.raises(ValueError, match="2 runs and 3 TrainConfigs"):
    ddss_jax.choose_on_validation(runs, problem, train=[train] * 3)
  with pytest.raises(ValueError, match=r"draws=0: score at least one draw"):
    ddss_jax.choose_on_validation(runs, problem, train=train, draws=0)


@pytest.mark.slow
def test_the_command_line_with_validation_writes_the_curves(tmp_path):
  config = tiny.get_config()
  config.train.validate_every_steps = 2
  config.train.validation_samples = 32
  results = run_lib.train_and_evaluate(config, str(tmp_path))
  assert results["best_step"] in (0, 2, 4)
  assert (tmp_path / "curves.png").stat().st_size > 0
  assert (tmp_path / "sampler_best.json").exists()


def test_iterator_data_cannot_carve_a_validation_split():
  problem = ddss_jax.make_problem(eps_fn=lambda p, x, t: x, model_params={},
                                  data=iter([np.zeros((8, 2), np.float32)] * 4),
                                  features=lambda p, x: x)
  with pytest.raises(ConfigError, match=r"config.train.validate_every_steps=2: problem 'custom' "
                     "cannot carve a validation split"):
    ddss_jax.learn_sampler(problem, train=ddss_jax.TrainConfig(validate_every_steps=2),
                           progress=False)


def test_a_bank_or_a_split_larger_than_the_data_is_named():
  problem = ddss_jax.make_problem(eps_fn=lambda p, x, t: x, model_params={},
                                  data=np.zeros((10, 2), np.float32), features=lambda p, x: x)
  train = dict(num_train_steps=1, batch_size=4)
  with pytest.raises(ConfigError, match=r"config.loss.kid_bank_size=20: batch of 20 from "
                     r"custom/train, which has 10 examples"):
    ddss_jax.learn_sampler(problem, train=ddss_jax.TrainConfig(**train),
                           loss=ddss_jax.LossConfig(kid_bank_size=20), progress=False)
  with pytest.raises(ConfigError, match=r"config.train.validation_size=10: a split of 10 from "
                     r"custom/train"):
    ddss_jax.learn_sampler(problem, train=ddss_jax.TrainConfig(
        validate_every_steps=1, validation_size=10, **train), progress=False)
  with pytest.raises(ConfigError, match=r"config.loss.kid_bank_size=1: must be 0 \(off\) or an "
                     r"integer >= 2"):
    ddss_jax.LossConfig(kid_bank_size=1)


def test_start_candidates_are_the_fixed_samplers_each_family_represents():
  schedule = schedules.linear_beta()
  kinds = lambda family, k: [(c.family, c.stride, c.eta) for c in select.start_candidates(
      samplers.make(family, schedule, k, stride="linear"))]
  # GGDM represents the multistep solvers too (their coefficients are a GGDM's).
  assert kinds("ggdm+pred+time", 10) == [
      (family, stride, 1.0 if family == "ddpm" else 0.0)
      for stride in ("linear", "quadratic", "logsnr")
      for family in ("ddim", "ddpm", "dpm-solver++2m", "unipc")]
  assert kinds("vars", 5) == [(family, stride, 1.0 if family == "ddpm" else 0.0)
                              for stride in ("linear", "quadratic", "logsnr")
                              for family in ("ddim", "ddpm")]
  assert [k[:2] for k in kinds("ggdm", 30)] == [  # the solvers skip the repeating stride
      ("ddim", "linear"), ("ddpm", "linear"), ("dpm-solver++2m", "linear"), ("unipc", "linear"),
      ("ddim", "quadratic"), ("ddpm", "quadratic"), ("ddim", "logsnr"), ("ddpm", "logsnr"),
      ("dpm-solver++2m", "logsnr"), ("unipc", "logsnr")]
  # The quadratic stride repeats t = 0 at K = 30, which the solvers cannot take.
  assert kinds("unipc+time", 30) == [("unipc", "linear", 0.0), ("unipc", "logsnr", 0.0)]
  clipping = samplers.make("ggdm", schedule, 5, clip_x0=1.0)
  assert {c.clip_x0 for c in select.start_candidates(clipping)} == {1.0}


class _FakeScore:
  """Scores by (family, stride) from a table (9.0 where it has none); counts its calls."""
  select_on = "fid"

  def __init__(self, table):
    self.table, self.calls = table, 0

  def __call__(self, sampler, params):
    self.calls += 1
    fid = self.table.get((sampler.family, sampler.stride), 9.0)
    return {"fid": fid, "kid": fid / 100}


def test_select_start_takes_the_lowest_score_the_first_of_ties_and_keeps_it(tmp_path):
  sampler = samplers.make("ggdm", schedules.linear_beta(), 10)
  table = {("ddim", "linear"): 3.0, ("ddpm", "linear"): 1.5, ("ddim", "quadratic"): 2.0,
           ("ddpm", "quadratic"): 4.0, ("ddim", "logsnr"): 1.5}
  score = _FakeScore(table)
  chosen = select.select_start(sampler, None, score, str(tmp_path))
  assert (chosen.family, chosen.stride, chosen.eta, chosen.start_solver) == (
      "ggdm", "linear", 1.0, None)
  assert score.calls == 12
  record = json.loads((tmp_path / "start.json").read_text())
  assert record["chosen"] == {"stride": "linear", "eta": 1.0, "start_solver": None}
  assert [row["fid"] for row in record["candidates"]][:6] == [3.0, 1.5, 9.0, 9.0, 2.0, 4.0]
  # A rerun in the workdir reads the choice back without scoring again.
  again = select.select_start(sampler, None, _FakeScore({}), str(tmp_path))
  assert (again.stride, again.eta) == ("linear", 1.0)
  # The chosen start is the candidate itself: GGDM at init is DDPM at that stride.
  ddpm = samplers.make("ddpm", sampler.schedule, 10, stride="linear")
  for name in ("mu", "sigma"):
    np.testing.assert_allclose(chosen.coefficients(chosen.init())._asdict()[name],
                               ddpm.coefficients({})._asdict()[name], rtol=1e-5, atol=1e-6)


def test_select_noise_free_leaves_ddpm_out_and_takes_the_best_of_the_rest(tmp_path):
  sampler = samplers.make("ggdm", schedules.linear_beta(), 10)
  assert [c.family for c in select.start_candidates(sampler, noise_free=True)] == [
      "ddim", "dpm-solver++2m", "unipc"] * 3
  # The same table as above: DDPM linear (1.5) ties DDIM logsnr and comes first; left out, the
  # best noise-free candidate is DDIM logsnr.
  table = {("ddim", "linear"): 3.0, ("ddpm", "linear"): 1.5, ("ddim", "quadratic"): 2.0,
           ("ddpm", "quadratic"): 4.0, ("ddim", "logsnr"): 1.5}
  score = _FakeScore(table)
  chosen = select.select_start(sampler, None, score, str(tmp_path), noise_free=True)
  assert (chosen.stride, chosen.eta, chosen.start_solver) == ("logsnr", 0.0, None)
  assert score.calls == 9
  record = json.loads((tmp_path / "start.json").read_text())
  assert record["noise_free"] is True and {r["family"] for r in record["candidates"]} == {
      "ddim", "dpm-solver++2m", "unipc"}


def test_select_start_can_choose_a_solver_and_ggdm_then_runs_it_exactly(tmp_path):
  schedule = schedules.linear_beta()
  sampler = samplers.make("ggdm+pred+time", schedule, 6)
  score = _FakeScore({("unipc", "logsnr"): 0.5, ("dpm-solver++2m", "linear"): 0.7})
  chosen = select.select_start(sampler, None, score, str(tmp_path))
  assert (chosen.stride, chosen.eta, chosen.start_solver) == ("logsnr", 0.0, "unipc")
  again = select.select_start(sampler, None, _FakeScore({}), str(tmp_path))
  assert again.start_solver == "unipc"
  # A start.json of the time before solver starts (no start_solver) means DDIM(eta).
  old = tmp_path / "old"
  old.mkdir()
  (old / "start.json").write_text(json.dumps({"chosen": {"stride": "linear", "eta": 1.0}}))
  assert select.select_start(chosen, None, _FakeScore({}), str(old)).start_solver is None
  # GGDM+PRED+TIME at init draws UniPC's samples (sigma is 0; times decode to the stride's).
  eps_fn = lambda x, t: 0.3 * x + 0.01 * t[:, None]
  key = jax.random.PRNGKey(0)
  unipc = samplers.make("unipc", schedule, 6, stride="logsnr")
  np.testing.assert_allclose(chosen.sample(chosen.init(), eps_fn, key, (64, 2)),
                             unipc.sample({}, eps_fn, key, (64, 2)), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_learn_sampler_with_start_select_scores_on_the_validation_split(tmp_path):
  config = tiny.get_config()
  problem = _toy_problem(config, str(tmp_path / "model"))
  learned = ddss_jax.learn_sampler(
      problem, sampler=ddss_jax.SamplerConfig(num_steps=3, start="select"),
      train=ddss_jax.TrainConfig(num_train_steps=0, batch_size=16, validation_size=64,
                                 validation_samples=64), workdir=str(tmp_path / "run"),
      progress=False)
  record = json.loads((tmp_path / "run" / "start.json").read_text())
  best = min(record["candidates"], key=lambda row: row["fid"])
  assert (learned.sampler.stride, learned.sampler.eta, learned.sampler.start_solver) == (
      best["stride"], best["eta"], best["start_solver"])
  fids = [row["fid"] for row in record["candidates"]]
  assert len(fids) == 12 and len(set(fids)) == 12
  # Scored independently: the learned sampler at its start gives the winner's validation FID.
  _, held_out = problem.split_validation(64)
  score = validation.ValidationScore(problem, held_out, ddss_jax.TrainConfig(
      batch_size=16, validation_size=64, validation_samples=64))
  np.testing.assert_allclose(score(learned.sampler, learned.params)["fid"], best["fid"],
                             rtol=1e-3)


def test_start_select_needs_a_validation_split():
  problem = ddss_jax.make_problem(eps_fn=lambda p, x, t: x, model_params={},
                                  data=iter([np.zeros((8, 2), np.float32)] * 4),
                                  features=lambda p, x: x)
  with pytest.raises(ConfigError, match=r"config.sampler.start='select': problem 'custom' "
                     r"cannot carve a validation split .* use 'configured'"):
    ddss_jax.learn_sampler(problem, sampler=ddss_jax.SamplerConfig(start="select"),
                           train=ddss_jax.TrainConfig(num_train_steps=1, batch_size=8),
                           progress=False)


def test_a_clipping_mismatch_with_the_model_is_logged(caplog):
  problem = ddss_jax.make_problem(eps_fn=lambda p, x, t: x, model_params={},
                                  data=np.zeros((4, 2), np.float32), features=lambda p, x: x)
  schedule = problem.schedule
  asks = lambda clip: dataclasses.replace(problem, model_clip_x0=clip)
  note = ddss.note_clipping
  with caplog.at_level("WARNING"):
    note(asks(1.0), samplers.make("ddim", schedule, 4))
  assert ("scheduler_config.json says clip_sample=True (range 1), but the sampler does not clip "
          "(clip_x0=0); set config.sampler.clip_x0=1.0") in caplog.text
  caplog.clear()
  with caplog.at_level("WARNING"):
    note(asks(0.0), samplers.make("ddim", schedule, 4, clip_x0=1.0))
  assert ("says clip_sample=False, but the sampler clips x0 predictions to [-1, 1]; set "
          "config.sampler.clip_x0=0.0") in caplog.text
  caplog.clear()
  with caplog.at_level("WARNING"):
    for clip, sampler_clip in ((1.0, 1.0), (0.0, None), (None, 1.0), (None, None)):
      note(asks(clip), samplers.make("ddim", schedule, 4, clip_x0=sampler_clip))
  assert not caplog.text
