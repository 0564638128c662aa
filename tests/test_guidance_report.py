"""The guidance study's report on synthetic rows: the paired verdict uses only the seeds at which
every finalist has its row, a study still running says so, and a learned sampler that kept its
fixed start is named as that fixed sampler."""

from experiments.guidance import report

FIXED = {"sampler": "ddim", "stride": "linear", "weight": 2.0, "interval": "-"}
OURS = {"sampler": report.LEARNED, "stride": "linear", "weight": 2.0, "interval": "-"}


def _row(base, seed, fid, num_steps=10):
  return {**base, "num_steps": num_steps, "seed": seed, "fid": fid, "class_fid": 1.0,
          "class_accuracy": 0.9, "class_accuracy_std": 0.0095, "confident_correct_share": 0.8,
          "precision": 0.9, "recall": 0.8}


def _finalists(num_seeds, *, ours_at_last=True):
  rows = []
  for i in range(num_seeds):
    seed = 2234 + 1000 * i
    rows.append(_row(FIXED, seed, 0.20 + 0.01 * i))
    if ours_at_last or i < num_seeds - 1:
      rows.append(_row(OURS, seed, 0.10 + 0.01 * i + 0.001 * (i % 2)))
  return rows


def test_the_finalists_of_every_seed_give_a_final_verdict():
  text = "\n".join(report.finalists_section(_finalists(report.FINALIST_SEEDS), 10))
  assert f"on {report.FINALIST_SEEDS} evaluation seeds" in text
  assert "In progress" not in text
  assert "met at K = 10." in text
  assert "| -0.0996 +- 0.0002 |" in text  # ours - ddim: -0.1 + 0.001 at seeds 2 and 4


def test_a_seed_still_running_is_left_out_and_the_verdict_is_provisional():
  text = "\n".join(report.finalists_section(_finalists(4, ours_at_last=False), 10))
  assert "on 3 evaluation seeds" in text
  assert f"In progress: 3 of the study's {report.FINALIST_SEEDS} seeds" in text
  assert "met at K = 10 so far." in text
  assert "| 0.210 |" in text  # ddim's mean over seeds 2234..4234, not 5234's 0.23


def test_a_screen_without_its_learned_samplers_is_in_progress():
  rows = [_row({**FIXED, "weight": w}, 1234, 0.2 + w) for w in (0.0, 1.0, 2.0)]
  assert "In progress: 3 rows so far" in "\n".join(report.screen_section(rows, 10))
  rows += [_row({**OURS, "sampler": name}, 1234, 0.1) for name in report.LEARNED_NAMES.values()]
  assert "In progress" not in "\n".join(report.screen_section(rows, 10))


def test_a_learned_sampler_that_kept_its_start_is_named_as_the_fixed_sampler():
  fixed = [_row({**FIXED, "weight": w}, 1234, 0.2 + w) for w in (1.0, 2.0)]
  ours = _row(OURS, 1234, 2.2 * (1 + 5e-5))  # ddim w = 2's FID, rounded differently
  twin = report.fixed_twin(fixed, ours)
  assert twin is not None and twin["weight"] == 2.0
  # one real digit on the other side of a k-NN radius: still the same samples
  assert report.fixed_twin(fixed, {**ours, "recall": 0.801})["weight"] == 2.0
  assert report.fixed_twin(fixed, {**ours, "recall": 0.803}) is None  # other samples
  assert report.fixed_twin(fixed, {**ours, "fid": 2.2 * 1.001}) is None
  assert report.fixed_twin(fixed, {**ours, "seed": 2234}) is None
  screen = "\n".join(report.screen_section(fixed + [ours], 10))
  assert f"{report.LEARNED} draws what the fixed ddim (linear), w = 2 draws" in screen
  text = "\n".join(report.finalists_section(_finalists(report.FINALIST_SEEDS), 10, twin=twin))
  assert ("met at K = 10 (the learned sampler is its start, the fixed ddim (linear), w = 2, "
          "which DDSS kept).") in text
