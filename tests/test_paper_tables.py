"""experiments/paper_tables/run.py at toy sizes: rows land in results.csv as they finish (two
evaluation seeds), each learned sampler in <out>/samplers/ and lib/records.py reproduces its
row from there, a rerun resumes without recomputing, the report redraws lost sample grids and
renders every table from the rows (older results.csv files without the second seed too)."""

import csv
import json

import pytest

from ddss_jax.util.errors import ConfigError
from experiments.lib import protocol, records, table, verdicts
from experiments.paper_tables import report as tables_report, run as paper_tables

pytestmark = pytest.mark.slow  # end-to-end runs, subprocesses or committed results


def shrink(config):
  protocol.apply_overrides(config, protocol.OFF, source="test")  # levers: seconds
  config.train.update(batch_size=8, log_every_steps=1)
  config.eval.batch_size = 16
  config.mnist.update(kid_subsets=4, kid_subset_size=8)
  config.loss.update(teacher_steps=4, teacher_pool=16)


@pytest.fixture
def runner_factory(tmp_path, monkeypatch):
  learned = (("ggdm+pred+time", "kid", "quadratic"), ("ggdm+pred+time", "teacher", "quadratic"),
             ("unipc+time", "kid", "logsnr"))
  # The runner's rows, and the order results.csv keeps them in (experiments/lib/table.py).
  for module in (paper_tables, table):
    monkeypatch.setattr(module, "FIXED", (("ddim", "quadratic"), ("unipc", "logsnr")))
    monkeypatch.setattr(module, "TEACHER_ROW", ("ddim", "linear", 60))
    monkeypatch.setattr(module, "LEARNED", learned)
  monkeypatch.setattr(paper_tables, "GRID_STEPS", (2,))
  monkeypatch.setattr(paper_tables, "ALL_LEARNED_STEPS", (2,))
  # A protocol lever on (an EMA of the iterates): it must reach the learned rows' configs.
  return lambda: paper_tables.Runner(str(tmp_path / "out"), str(tmp_path / "work"),
                                     train_steps=2, num_samples=16, fixed_steps=[2, 4],
                                     edit_config=shrink, protocol={"train.ema_decay": 0.5})


def test_parts_write_rows_resume_and_render(runner_factory, tmp_path, monkeypatch):
  runner = runner_factory()
  (tmp_path / "out").mkdir()
  runner.run_part("fixed")
  runner.run_part("k2")
  with open(tmp_path / "out" / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == list(protocol.COLUMNS) + ["fid_2", "kid_2"]
  assert [(r["sampler"], r["num_steps"], r["loss"]) for r in rows] == [
      ("ddim:quadratic", "2", "none"), ("ddim:quadratic", "4", "none"),
      ("unipc:logsnr", "2", "none"), ("unipc:logsnr", "4", "none"),
      ("ddim:linear", "60", "none"),
      ("ggdm+pred+time", "2", "kid"), ("ggdm+pred+time", "2", "teacher"),
      ("unipc+time", "2", "kid")]
  for row in rows:
    assert float(row["fid"]) > 0 and 0 <= float(row["precision"]) <= 1
    # The second seed (1234 + 100) is other noise: other numbers, of the same order.
    assert float(row["fid_2"]) != float(row["fid"]) and float(row["kid_2"]) != float(row["kid"])
    assert 0.2 < float(row["fid_2"]) / float(row["fid"]) < 5
  # The learned samplers and the teacher pool stay in the workdir.
  assert (tmp_path / "work" / "runs" / "unipc+time_kid_K2" / "sampler.json").exists()
  assert len(list((tmp_path / "work" / "teacher").glob("teacher_mnist_ddim_linear4_n16_*"))) == 1
  # ... and a copy of each, with how its row was evaluated, in the output folder.
  assert sorted(p.name for p in (tmp_path / "out" / "samplers").iterdir()) == [
      "ggdm+pred+time_kid_K2.json", "ggdm+pred+time_teacher_K2.json", "unipc+time_kid_K2.json"]
  path = str(tmp_path / "out" / "samplers" / "ggdm+pred+time_kid_K2.json")
  with open(path) as f:
    record = json.load(f)["evaluation"]
  assert record["seeds"] == [1234, 1334] and record["num_samples"] == 16
  assert record["config"]["train"]["ema_decay"] == 0.5  # the protocol
  csv_row = rows[5]
  assert {c: f"{record['row'][c]:.6g}" for c in ("fid", "kid", "fid_2", "kid_2")} == {
      c: csv_row[c] for c in ("fid", "kid", "fid_2", "kid_2")}
  # Re-evaluated from the committed file alone: the same numbers, both seeds.
  metrics, _ = records.evaluate_record(path, workdir=str(tmp_path / "again"))
  assert metrics == {c: record["row"][c] for c in records.METRICS}
  metrics, _ = records.evaluate_record(path, workdir=str(tmp_path / "again"),
                                       seed=1334)
  assert (metrics["fid"], metrics["kid"]) == (record["row"]["fid_2"], record["row"]["kid_2"])
  assert records.recorded(record, num_samples=None, seed=1334) == {
      "fid": record["row"]["fid_2"], "kid": record["row"]["kid_2"]}
  assert records.recorded(record, num_samples=8, seed=None) is None

  # A new runner (a restarted process) finds every row done and computes nothing.
  def fail(*args, **kwargs):
    raise AssertionError("recomputed a finished row")
  monkeypatch.setattr(paper_tables.Runner, "evaluate", fail)
  again = runner_factory()
  again.run_part("fixed")
  again.run_part("k2")
  parts = again.read_parts()
  assert set(parts) == {"fixed", "k2"} and len(parts["k2"]["runs"]) == 2
  assert [run["rows"] for run in parts["k2"]["runs"]] == [3, 0] and parts["k2"]["seconds"] > 0
  assert parts["k2"]["runs"][0]["protocol"] == {"train.ema_decay": 0.5}
  assert parts["k2"]["runs"][0]["eval_seeds"] == [1234, 1334]

  # Each row at a grid K kept its first samples; where the workdir lost them (another session's
  # rows), the report part draws them again from the row's sampler: the same images.
  grids = tmp_path / "work" / "grids"
  kept = {p.name: p.read_bytes() for p in grids.iterdir()}
  assert sorted(kept) == sorted(tables_report.grid_file(s, l, 2) for s, l in [
      ("ddim:quadratic", "none"), ("unipc:logsnr", "none"), ("ggdm+pred+time", "kid"),
      ("ggdm+pred+time", "teacher"), ("unipc+time", "kid")])
  for p in grids.iterdir():
    p.unlink()
  again.run_part("report")
  assert {p.name: p.read_bytes() for p in grids.iterdir()} == kept

  text = (tmp_path / "out" / "RESULTS.md").read_text()
  assert "| DDIM, quadratic stride | " in text and "| UniPC +TIME (learned) | " in text
  assert "| GGDM +PRED +TIME (learned, teacher loss) | " in text
  assert "| fixed | " in text and "| k25 | not run yet | - |" in text
  assert "Reference: DDIM, linear stride with K = 60 (the teacher of the teacher loss): FID" in text
  assert (tmp_path / "out" / "figures" / "fid_vs_k.png").stat().st_size > 0
  assert "evaluation seed 1234 and 1334 for the second seed's columns" in text
  assert ("overrides on configs/mnist.py): `train.ema_decay` = 0.5; the optimisation's levers "
          "then: `loss.kid_bank_size` = 0, `sampler.start` = 'configured', `train.ema_decay` = "
          "0.5," in text and "Each learned sampler is in `samplers/` beside this file" in text)
  assert "on the 4000 training digits (Adam" in text and "starts from the quadratic stride" in text

  # A rerun with another --seed moves both seeds, and its report sets its rows against another
  # results.csv (here this one's rows with every KID moved by 1.5 of its std).
  other = table.read_rows(str(tmp_path / "out" / "results.csv"))
  for r in other:
    r["kid"] += 1.5 * r["kid_std"]
  rerun = paper_tables.Runner(str(tmp_path / "out"), str(tmp_path / "work"), train_steps=2,
                              num_samples=16, seed=1, eval_seeds=1,
                              compare_rows=("there.csv", other), edit_config=shrink)
  assert (rerun.config.train.seed, rerun.config.eval.seed, rerun.seeds) == (1, 1235, (1235,))
  rerun.run_part("report")
  text = (tmp_path / "out" / "RESULTS.md").read_text()
  assert "evaluation seed 1235, training seed 1;" in text
  assert "configs/mnist.py): none; the optimisation's levers then: `loss.kid_bank_size` = 0" in text
  assert ("## Against there.csv\n\n8 rows in both. The KID change is within the stated std "
          "(there) for 0, within twice it for 8 (largest 1.50)" in text)


def test_comparisons_take_the_best_fixed_sampler_and_the_solvers_at_2k():
  def row(sampler, k, fid, loss="none", fid_2=None):
    return dict(sampler=sampler, num_steps=k, loss=loss, fid=fid, kid=0.0, kid_std=0.0,
                precision=0.5, recall=0.6, fid_2=fid_2, kid_2=None)
  rows = [row("ddpm:linear", 5, 8.0), row("ddim:quadratic", 5, 6.0, fid_2=5.0),
          row("ddim:linear", 5, 9.0), row("unipc:logsnr", 5, 5.0),
          row("dpm-solver++2m:linear", 10, 2.5), row("unipc:linear", 10, 3.0),
          row("ggdm+pred+time", 5, 3.0, "kid", fid_2=3.5),
          row("ddim:linear", 10, 4.0), row("ggdm+pred+time", 10, 1.0, "kid")]
  lines = tables_report.comparisons(rows, [5, 10, 15])
  assert len(lines) == 4  # header, rule, K = 5 and 10 (nothing learned at K = 15)
  # Seed difference max(|3 - 3.5|, |6 - 5|) = 1; margins 3 and 1.5 on the two seeds, both > 1.
  assert lines[2] == ("| 5 | 3.000 | 6.000 (ddim:quadratic) | 0.50 | 0.42 | 5.000 (unipc:logsnr) "
                      "| 2.500 (dpm-solver++2m:linear) | 0.500 / 0.600 vs 0.500 / 0.600 "
                      "| 3.000 / 3.500 | 6.000 / 5.000 | 1.000 | yes |")
  # One seed only (an older results.csv): the seed columns are "-".
  assert lines[3] == ("| 10 | 1.000 | 4.000 (ddim:linear) | 0.25 | 0.60 | 2.500 "
                      "(dpm-solver++2m:linear) | - | - | 1.000 / - | 4.000 / - | - | - |")


def test_seed_check_says_no_when_the_margin_is_within_the_seed_difference():
  learned = dict(fid=3.0, fid_2=4.5)
  fixed = dict(fid=5.0, fid_2=5.2)
  # Seed difference max(1.5, 0.2) = 1.5; margins 2.0 and 0.7: not both above it.
  assert verdicts.seed_check(learned, fixed) == ("3.000 / 4.500", "1.500", "no")
  assert verdicts.seed_check(learned, dict(fixed, fid_2=None)) == ("3.000 / 4.500", "-", "-")


def test_old_results_csv_reads_without_the_second_seed(tmp_path):
  path = tmp_path / "results.csv"
  path.write_text("sampler,num_steps,loss,fid,kid,kid_std,precision,recall\n"
                  "ddim:quadratic,5,none,2.5,0.02,0.003,0.6,0.9\n")
  [row] = table.read_rows(str(path))
  assert (row["num_steps"], row["fid"], row["fid_2"], row["kid_2"]) == (5, 2.5, None, None)
  table.write_rows(str(path), [row])  # rewritten with the new columns, empty
  assert path.read_text().splitlines() == [
      "sampler,num_steps,loss,fid,kid,kid_std,precision,recall,fid_2,kid_2",
      "ddim:quadratic,5,none,2.5,0.02,0.003,0.6,0.9,,"]


def test_protocol_overrides_are_checked_and_applied(tmp_path):
  config = paper_tables.mnist.get_config()
  protocol.apply_overrides(config, {**protocol.LEVERS["cosine"][1],
                                    "sampler.start": "select"}, source="test")
  assert (config.train.lr_schedule, config.train.warmup_steps, config.sampler.start) == (
      "cosine", 10, "select")
  with pytest.raises(ConfigError, match=r"config.train.nope=1: .*\(from test\)"):
    protocol.apply_overrides(config, {"train.nope": 1}, source="test")
  with pytest.raises(ConfigError, match="config.nope=1"):
    protocol.apply_overrides(config, {"nope": 1}, source="test")
  assert protocol.PROTOCOL == {}  # configs/mnist.py as it is: its levers on
  runner = paper_tables.Runner(str(tmp_path / "out"), str(tmp_path / "work"), train_steps=2,
                               num_samples=16)
  assert (runner.levers == protocol.ON
          and runner.levers["sampler.start"] == "select_noise_free")
  # The report's protocol names the digits from the validation size, not configs/mnist.py's 500.
  text = tables_report.render(str(tmp_path / "out"), str(tmp_path / "work"), [], {},
                              levers=runner.levers, validation_size=300)
  assert ("on the 3700 training digits a 300-digit validation split leaves" in text
          and "the fixed sampler without noise it represents with the lowest FID on the "
          "300-digit validation split" in text)
  with pytest.raises(ValueError, match=r"--parts: unknown \['k7'\]; valid choices: \['fixed'"):
    protocol.check_choices("parts", ["fixed", "k7"], protocol.PARTS)


def test_rerun_table_measures_the_change_in_stds():
  def row(sampler, k, fid, kid, kid_std, loss="none"):
    return dict(sampler=sampler, num_steps=k, loss=loss, fid=fid, kid=kid, kid_std=kid_std,
                precision=0.5, recall=0.6)
  here = [row("ddim:quadratic", 5, 2.2, 0.030, 0.003), row("ggdm", 5, 1.5, 0.010, 0.002, "kid"),
          row("ggdm", 10, 1.0, 0.007, 0.001, "kid")]  # not in the other file
  there = [row("ddim:quadratic", 5, 2.0, 0.020, 0.004), row("ggdm", 5, 1.5, 0.011, 0.002, "kid")]
  lines, summary = tables_report.rerun_table(here, there)
  # |0.030 - 0.020| = 0.010: 2.5 stds there (0.004), 2 of the difference (sqrt(3^2 + 4^2) = 5e-3);
  # |0.010 - 0.011| = 0.001: 0.5 there, 0.001 / (2e-3 * sqrt(2)) = 0.35 of the difference.
  assert lines[2] == ("| DDIM, quadratic stride | 5 | 2.200 | 2.000 | +10.0% | 0.0300 +- 0.0030 | "
                      "0.0200 +- 0.0040 | 2.50 | 2.00 |")
  assert lines[3].endswith("| +0.0% | 0.0100 +- 0.0020 | 0.0110 +- 0.0020 | 0.50 | 0.35 |")
  assert len(lines) == 4
  assert summary == ("2 rows in both. The KID change is within the stated std (there) for 1, "
                     "within twice it for 1 (largest 2.50); in the std of the difference of two "
                     "independent estimates, within one for 1, within two for 2 (largest 2.00). "
                     "The FID changes by +5.0% in the median (in that direction for 1 rows) and "
                     "by 10.0% at most.")
  assert tables_report.rerun_table(here[2:], there) == (
      [], "No row of this run is in the compared file.")


def test_every_family_at_k5_and_10_the_headline_alone_elsewhere():
  every = protocol.learned_at(5)
  assert every == protocol.learned_at(10) == protocol.LEARNED and len(every) == 8
  for k in (15, 20, 25):
    assert protocol.learned_at(k) == (("ggdm+pred+time", "kid", "quadratic"),)
