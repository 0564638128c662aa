"""experiments/ablation.py at toy sizes: a row per (variant, K) in results.csv, the curves, the
report, and a rerun that keeps finished rows."""

import os

import pytest

from configs import mnist_tiny
from experiments import ablation


@pytest.fixture(name="tiny_rows")
def _tiny_rows(monkeypatch):
  monkeypatch.setitem(ablation.VARIANTS, "validation", (
      "validate every step, 16 samples", {"train.validate_every_steps": 1,
                                          "train.validation_samples": 16}))


def test_rows_curves_and_report(tiny_rows, tmp_path):  # pylint: disable=unused-argument
  out, work = str(tmp_path / "out"), str(tmp_path / "work")
  row = ablation.run_row("validation", 2, workdir=work, out=out, num_samples=16,
                         base=mnist_tiny.get_config)
  # The paper-protocol row as a copy with another FID: the report's ratio column is against it.
  rows = [{**row, "variant": "paper", "fid": str(2 * float(row["fid"])), "best_step": ""}, row]
  ablation.write_rows(os.path.join(out, "results.csv"), rows)
  ablation.report(rows, os.path.join(out, "RESULTS.md"))
  back = ablation.read_rows(os.path.join(out, "results.csv"))
  assert [(r["variant"], r["num_steps"]) for r in back] == [("paper", "2"), ("validation", "2")]
  assert back[1]["best_step"] in ("1", "2") and float(back[1]["train_minutes"]) >= 0
  assert os.path.getsize(os.path.join(out, "curves_validation_K2.png")) > 0
  text = open(os.path.join(out, "RESULTS.md")).read()
  assert "## K = 2" in text and "| 1.00 |" in text and "| 0.50 |" in text


def test_unknown_variant_is_named():
  with pytest.raises(KeyError):
    ablation.row_config("nope", 10, 1000)
  config = ablation.row_config("all", 10, 1000)
  assert (config.sampler.num_steps, config.loss.kid_bank_size, config.train.ema_decay) == (
      10, 3500, 0.95)
