"""experiments/paper_tables.py at toy sizes: rows land in results.csv as they finish, a rerun
resumes without recomputing, the report renders every table from the rows."""

import csv

import pytest

from experiments import paper_report, paper_tables


def shrink(config):
  config.train.update(batch_size=8, log_every_steps=1)
  config.eval.batch_size = 16
  config.mnist.update(kid_subsets=4, kid_subset_size=8)
  config.loss.update(teacher_steps=4, teacher_pool=16)


@pytest.fixture
def runner_factory(tmp_path, monkeypatch):
  monkeypatch.setattr(paper_tables, "FIXED", (("ddim", "quadratic"), ("unipc", "logsnr")))
  monkeypatch.setattr(paper_tables, "TEACHER_ROW", ("ddim", "linear", 60))
  monkeypatch.setattr(paper_tables, "LEARNED", (("ggdm+pred+time", "kid", "quadratic"),
                                                ("ggdm+pred+time", "teacher", "quadratic"),
                                                ("unipc+time", "kid", "logsnr")))
  return lambda: paper_tables.Runner(str(tmp_path / "out"), str(tmp_path / "work"),
                                     train_steps=2, num_samples=16, fixed_steps=[2, 4],
                                     edit_config=shrink)


def test_parts_write_rows_resume_and_render(runner_factory, tmp_path, monkeypatch):
  runner = runner_factory()
  (tmp_path / "out").mkdir()
  runner.run_part("fixed")
  runner.run_part("k2")
  with open(tmp_path / "out" / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == list(paper_tables.COLUMNS)
  assert [(r["sampler"], r["num_steps"], r["loss"]) for r in rows] == [
      ("ddim:quadratic", "2", "none"), ("ddim:quadratic", "4", "none"),
      ("unipc:logsnr", "2", "none"), ("unipc:logsnr", "4", "none"),
      ("ddim:linear", "60", "none"),
      ("ggdm+pred+time", "2", "kid"), ("ggdm+pred+time", "2", "teacher"),
      ("unipc+time", "2", "kid")]
  for row in rows:
    assert float(row["fid"]) > 0 and 0 <= float(row["precision"]) <= 1
  # The learned samplers and the teacher pool stay in the workdir.
  assert (tmp_path / "work" / "runs" / "unipc+time_kid_K2" / "sampler.json").exists()
  assert len(list((tmp_path / "work" / "teacher").glob("teacher_mnist_ddim_linear4_n16_*"))) == 1

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

  text = (tmp_path / "out" / "RESULTS.md").read_text()
  assert "| DDIM, quadratic stride | " in text and "| UniPC +TIME (learned) | " in text
  assert "| GGDM +PRED +TIME (learned, teacher loss) | " in text
  assert "| fixed | " in text and "| k25 | not run yet | - |" in text
  assert "Reference: DDIM, linear stride with K = 60 (the teacher of the teacher loss): FID" in text
  assert (tmp_path / "out" / "paper_tables" / "fid_vs_k.png").stat().st_size > 0

  # A rerun with another --seed moves both seeds, and its report sets its rows against another
  # results.csv (here this one's rows with every KID moved by 1.5 of its std).
  other = paper_tables.read_rows(str(tmp_path / "out" / "results.csv"))
  for r in other:
    r["kid"] += 1.5 * r["kid_std"]
  rerun = paper_tables.Runner(str(tmp_path / "out"), str(tmp_path / "work"), train_steps=2,
                              num_samples=16, seed=1, compare_rows=("there.csv", other),
                              edit_config=shrink)
  assert (rerun.config.train.seed, rerun.config.eval.seed) == (1, 1235)
  rerun.run_part("report")
  text = (tmp_path / "out" / "RESULTS.md").read_text()
  assert "evaluation seed 1235, training seed 1;" in text
  assert ("## Against there.csv\n\n8 rows in both. The KID change is within the stated std "
          "(there) for 0, within twice it for 8 (largest 1.50)" in text)


def test_comparisons_take_the_best_fixed_sampler_and_the_solvers_at_2k():
  def row(sampler, k, fid, loss="none"):
    return dict(sampler=sampler, num_steps=k, loss=loss, fid=fid, kid=0.0, kid_std=0.0,
                precision=0.5, recall=0.6)
  rows = [row("ddpm:linear", 5, 8.0), row("ddim:quadratic", 5, 6.0), row("ddim:linear", 5, 9.0),
          row("unipc:logsnr", 5, 5.0), row("dpm-solver++2m:linear", 10, 2.5),
          row("unipc:linear", 10, 3.0), row("ggdm+pred+time", 5, 3.0, "kid")]
  lines = paper_report.comparisons(rows, [5, 10])
  assert len(lines) == 3  # header, rule, K = 5 (nothing learned at K = 10)
  assert lines[2] == ("| 5 | 3.000 | 6.000 (ddim:quadratic) | 0.50 | 0.42 | 5.000 (unipc:logsnr) "
                      "| 2.500 (dpm-solver++2m:linear) | 0.500 / 0.600 vs 0.500 / 0.600 |")


def test_rerun_table_measures_the_change_in_stds():
  def row(sampler, k, fid, kid, kid_std, loss="none"):
    return dict(sampler=sampler, num_steps=k, loss=loss, fid=fid, kid=kid, kid_std=kid_std,
                precision=0.5, recall=0.6)
  here = [row("ddim:quadratic", 5, 2.2, 0.030, 0.003), row("ggdm", 5, 1.5, 0.010, 0.002, "kid"),
          row("ggdm", 10, 1.0, 0.007, 0.001, "kid")]  # not in the other file
  there = [row("ddim:quadratic", 5, 2.0, 0.020, 0.004), row("ggdm", 5, 1.5, 0.011, 0.002, "kid")]
  lines, summary = paper_report.rerun_table(here, there)
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
  assert paper_report.rerun_table(here[2:], there) == (
      [], "No row of this run is in the compared file.")
