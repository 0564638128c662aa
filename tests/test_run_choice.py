"""experiments/lib/choice.py: a rescored run gives the validation FID its training logged
(problem rebuilt from the record, training seed 1), a pair must differ in its choice's fields
alone, the rules, the targets' arithmetic, the report in each choice's words, and a group of
three checked, chosen and reported against its first run."""

import json

import pytest

from configs import mnist_tiny
from ddss_jax import run as run_lib
from ddss_jax.util import logs
from experiments.lib import choice as choice_lib, records, verdicts
from experiments.learning_rate_choice.run import CHOICE as RATE
from experiments.rate_and_start_choice.run import CHOICE as BOTH
from experiments.start_choice.run import CHOICE as START

pytestmark = pytest.mark.slow  # end-to-end runs, subprocesses or committed results

ROW = {"fid": 1.0, "kid": 0.0, "kid_std": 0.0, "precision": 0.5, "recall": 0.5, "fid_2": 1.0,
       "kid_2": 0.0}


def _record(path, config, sampler, params):
  records.write_record(path, sampler, params, config=config, num_samples=16,
                       batch_size=8, seeds=(7, 107), row=ROW)


def _three_files(tmp_path):
  """mnist_tiny's config, run and initial parameters, and three file paths, the first
  recorded with that config."""
  config = mnist_tiny.get_config()
  run = run_lib.setup(config, str(tmp_path / "run"))
  params = run.sampler.init()
  paths = [str(tmp_path / f"{n}.json") for n in ("a", "b", "c")]
  _record(paths[0], config, run.sampler, params)
  return config, run, params, paths


def test_a_rescored_run_gives_the_validation_fid_its_training_logged(tmp_path):
  config = mnist_tiny.get_config()
  config.train.seed = 1  # the carve and the validation noise follow it
  config.train.validate_every_steps = 1
  config.train.validation_size = 64
  config.train.validation_samples = 16
  run = run_lib.setup(config, str(tmp_path / "run"))
  writer = logs.MetricWriter(run.workdir)
  learned = run_lib.learn(run, run_lib.build_problem(config, run.schedule, run.workdir),
                          writer)
  writer.close()
  logged = {line["step"]: line["val/fid"] for line in learned.history if "val/fid" in line}
  assert sorted(logged) == [0, 1, 2] and len(set(logged.values())) == 3
  path = str(tmp_path / "sampler.json")
  _record(path, config, learned.sampler, learned.params)
  own, other = choice_lib.score(path, str(tmp_path / "scratch"), redraws=1)
  assert own["fid"] == pytest.approx(logged[learned.best_step], rel=1e-5)
  assert abs(other["fid"] - own["fid"]) > 1e-3  # another draw of samples, the same split


def test_a_pair_differs_in_its_choice_s_fields_alone(tmp_path):
  config, run, params, paths = _three_files(tmp_path)
  config.train.learning_rate = 1e-3
  config.train.checkpoint_every_steps = 25  # does not change what is learned
  _record(paths[1], config, run.sampler, params)
  choice_lib.check_group((paths[0], paths[1]), RATE)
  config.train.seed = 1
  _record(paths[2], config, run.sampler, params)
  with pytest.raises(ValueError, match=r"differ in \['train.seed'\], not in the learning rate"):
    choice_lib.check_group((paths[0], paths[2]), RATE)
  # A record older than a field has its default; another value is another run.
  with open(paths[1], encoding="utf-8") as f:
    record = json.load(f)
  del record["evaluation"]["config"]["train"]["validation_draws"]
  with open(paths[1], "w", encoding="utf-8") as f:
    json.dump(record, f)
  choice_lib.check_group((paths[0], paths[1]), RATE)
  config.train.seed, config.train.validation_draws = 0, 4
  _record(paths[2], config, run.sampler, params)
  with pytest.raises(ValueError, match=r"\['train.validation_draws'\]"):
    choice_lib.check_group((paths[0], paths[2]), RATE)
  # The start's fields: another stride and start are the start choice's pair, not the rate's.
  config.train.validation_draws = 1
  config.sampler.stride, config.sampler.start = "linear", "select_noise_free"
  _record(paths[2], config, run.sampler, params)
  config.train.learning_rate = mnist_tiny.get_config().train.learning_rate
  _record(paths[1], config, run.sampler, params)
  choice_lib.check_group((paths[0], paths[1]), START)
  with pytest.raises(ValueError, match=r"\['train.learning_rate'\], not in the start alone; a "
                     r"pair must differ in sampler.start, sampler.stride, sampler.eta only"):
    choice_lib.check_group((paths[0], paths[2]), START)
  with pytest.raises(ValueError, match=r"\['sampler.start', 'sampler.stride'\], not in the "
                     "learning rate"):
    choice_lib.check_group((paths[0], paths[1]), RATE)


def test_the_rule_keeps_the_lower_validation_fid_and_the_default_on_a_tie():
  assert choice_lib.choose((0.363, 0.331)) == 1
  assert choice_lib.choose((0.331, 0.363)) == 0
  assert choice_lib.choose((0.35, 0.35)) == 0
  # The second rule: the mean over the draws (0.35 / 0.34 here), 5e-3 on a tie.
  assert choice_lib.choose_by_mean(([0.36, 0.34], [0.30, 0.38])) == 1
  assert choice_lib.choose_by_mean(([0.30, 0.36], [0.32, 0.34])) == 0
  # Held-out: the lower mean of the two evaluation seeds' FIDs (0.245 against 0.217).
  runs = [{"row": {"fid": 0.240, "fid_2": 0.250}}, {"row": {"fid": 0.225, "fid_2": 0.209}}]
  assert choice_lib.held_out_better(runs) == 1 and choice_lib.held_out_better(runs[::-1]) == 0


def test_the_targets_arithmetic():
  row = {"fid": 0.20, "fid_2": 0.22, "recall": 0.94}
  fixed = {"sampler": "unipc:logsnr", "fid": 0.30, "fid_2": 0.28, "recall": 0.95}
  cells = verdicts.targets(row, fixed, {"fid": 0.21, "fid_2": 0.25}, num_samples=1000,
                           full_quality_fid=0.19)
  # margin min(0.10, 0.06) against the larger seed change 0.02; gaps 0.10 / 0.11 and
  # 0.06 / 0.09; two binomial stds 2 sqrt(0.95 0.05 / 1000) = 0.0138.
  assert cells == {"beats": "yes (+0.060 vs 0.020)", "gap": "91% / 67%",
                   "recall": "yes (0.940 vs 0.950 - 0.014)", "beats_2k": "yes"}
  cells = verdicts.targets({**row, "recall": 0.93}, fixed, {"fid": 0.19, "fid_2": 0.25},
                           num_samples=1000, full_quality_fid=0.19)
  assert cells["recall"].startswith("no") and cells["beats_2k"] == "no"
  assert verdicts.targets(row, {**fixed, "fid": 0.21}, None, num_samples=1000,
                          full_quality_fid=0.19)["beats"].startswith("no")
  assert set(verdicts.targets(row, None, None, num_samples=1000,
                              full_quality_fid=0.19).values()) == {"-"}


def test_the_report_names_the_choice_and_what_is_missing(tmp_path):
  record = {"num_samples": 1000, "row": {"fid": 0.225, "fid_2": 0.209, "recall": 0.956}}
  other = {"num_samples": 1000, "row": {"fid": 0.200, "fid_2": 0.250, "recall": 0.9}}
  fixed = [{"sampler": "unipc:logsnr", "num_steps": 25, "loss": "none", "fid": 0.296,
            "fid_2": 0.263, "recall": 0.952}]
  path = str(tmp_path / "RESULTS.md")
  line = {"num_steps": 25, "seed": 0, "val_fids": (0.363, 0.331), "chosen": 1,
          "redraws": ([0.34, 0.35], [0.36, 0.40]), "records": [other, record]}
  choice_lib.report([line], fixed, path, RATE, full_quality_fid=0.192,
                    missing=["experiments/x.json"])
  text = open(path, encoding="utf-8").read()
  # Means 0.351 and 0.364, sample stds 0.0115 and 0.0345; the redraws choose 5e-3 twice, the
  # mean 5e-3 too; held-out means 0.225 and 0.217: 1e-3 better; the chosen run is 1e-3's.
  # Differences on the same draw +0.032, -0.020, -0.050: mean -0.0127, std 0.0415 (rounds to 0.041).
  assert ("| 25 | 0 | 0.363 / 0.331 | 1e-3 | 0.351 +- 0.012 / 0.364 +- 0.035 | -0.013 +- 0.041 "
          "| 5e-3 5e-3 | "
          "5e-3 | 1e-3 (0.225 / 0.217) |") in text
  # The targets of each rule's run: 1e-3's record for the run's draw, 5e-3's for the mean.
  assert ("| 25 | 0 | the run's draw | 1e-3 | 0.225 / 0.209 | 0.956 | unipc:logsnr 0.296 / "
          "0.263 | yes (+0.054 vs 0.033) | 68% / 76% |") in text
  assert ("| 25 | 0 | the mean of the draws | 5e-3 | 0.200 / 0.250 | 0.900 | unipc:logsnr "
          "0.296 / 0.263 | no (+0.013 vs 0.050) | 92% / 18% | no (0.900 vs 0.952 - 0.014) |"
          ) in text
  assert "Not scored yet (sampler files missing): `experiments/x.json`." in text
  # Another choice's words: its labels name the runs, its module the command.
  text = choice_lib.report([line], fixed, path, START, full_quality_fid=0.192, missing=[])
  assert ("| 25 | 0 | 0.363 / 0.331 | DDIM linear | 0.351 +- 0.012 / 0.364 +- 0.035 | -0.013 "
          "+- 0.041 | selected selected | selected | DDIM linear (0.225 / 0.217) |") in text
  assert "validation FID, selected / DDIM linear" in text and "Not scored yet" not in text
  assert text.startswith("# The start chosen on the validation split, after learning from it")
  assert "`python -m experiments.start_choice.run`" in text


def test_a_group_of_three_is_checked_chosen_and_reported_against_its_first(tmp_path):
  config, run, params, paths = _three_files(tmp_path)
  config.train.learning_rate = 1e-3
  _record(paths[1], config, run.sampler, params)
  config.train.learning_rate = mnist_tiny.get_config().train.learning_rate
  config.sampler.stride, config.sampler.start = "linear", "select_noise_free"
  _record(paths[2], config, run.sampler, params)
  choice_lib.check_group(tuple(paths), BOTH)
  # Each differs from the first in one of the fields; the third is not the second's pair in
  # the rate's choice, and a group has one file per label.
  with pytest.raises(ValueError, match=r"differ in \['sampler.start', 'sampler.stride'\]"):
    choice_lib.check_group((paths[1], paths[2]), RATE)
  with pytest.raises(ValueError, match=r"a group of 2 files .* not one per label "
                     r"\['default', '1e-3', 'DDIM linear'\]"):
    choice_lib.check_group(tuple(paths[:2]), BOTH)
  # The lowest, the first of equals.
  assert choice_lib.choose((0.40, 0.35, 0.37)) == 1
  assert choice_lib.choose((0.35, 0.36, 0.35)) == 0
  assert choice_lib.choose((0.40, 0.35, 0.35)) == 1
  # Means 0.35, 0.37, 0.34.
  assert choice_lib.choose_by_mean(([0.30, 0.40], [0.36, 0.38], [0.33, 0.35])) == 2
  runs = [{"row": {"fid": f, "fid_2": f}} for f in (0.30, 0.20, 0.25)]
  assert choice_lib.held_out_better(runs) == 1
  fixed = [{"sampler": "unipc:logsnr", "num_steps": 25, "loss": "none", "fid": 0.296,
            "fid_2": 0.263, "recall": 0.952}]
  records = [{"num_samples": 1000, "row": {"fid": f, "fid_2": f2, "recall": 0.95}}
             for f, f2 in ((0.296, 0.263), (0.225, 0.209), (0.392, 0.341))]
  line = {"num_steps": 25, "seed": 0, "val_fids": (0.363, 0.331, 0.364), "chosen": 1,
          "redraws": ([0.40, 0.38], [0.35, 0.33], [0.30, 0.45]), "records": records}
  text = choice_lib.report([line], fixed, str(tmp_path / "RESULTS.md"), BOTH,
                           full_quality_fid=0.192, missing=[])
  # Draws (0.363, 0.40, 0.38), (0.331, 0.35, 0.33), (0.364, 0.30, 0.45): means 0.381, 0.337,
  # 0.371; default - 1e-3 per draw +0.032, +0.05, +0.05 (mean +0.044, std 0.0104); default -
  # DDIM linear -0.001, +0.10, -0.07 (mean +0.010, std 0.0855). Redraws choose DDIM linear
  # (0.30 lowest), then 1e-3 (0.33). Held-out means 0.2795 (the float
  # just below: 0.279), 0.217, 0.3665.
  assert ("| 25 | 0 | 0.363 / 0.331 / 0.364 | 1e-3 | 0.381 +- 0.019 / 0.337 +- 0.011 / 0.371 "
          "+- 0.075 | +0.044 +- 0.010 / +0.010 +- 0.086 | DDIM linear 1e-3 | 1e-3 | 1e-3 "
          "(0.279 / 0.217 / 0.367) |") in text
  assert "validation FID, default / 1e-3 / DDIM linear | chosen" in text
  assert "default - 1e-3 / default - DDIM linear on the same draw" in text
  assert "keeps the lowest validation FID, default on a tie" in text
  assert "the same noise seeds for all files of a group" in text
  assert ("| 25 | 0 | the run's draw | 1e-3 | 0.225 / 0.209 | 0.950 | unipc:logsnr 0.296 / "
          "0.263 | yes (+0.054 vs 0.033) |") in text
