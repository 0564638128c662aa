"""The progress clock (compilation left out of the speed) and the metric log."""

import pytest

from ddss_jax.util import logs


class FakeClock:
  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


@pytest.fixture
def clock(monkeypatch):
  fake = FakeClock()
  monkeypatch.setattr(logs.StepClock, "now", staticmethod(fake))
  return fake


def test_rate_leaves_the_compiling_first_step_out(clock):
  steps = logs.StepClock(first_step=10)
  clock.t += 30.0                        # step 11 compiles: 30 s
  assert steps.first_done() == 30.0
  assert steps.rate(11) == pytest.approx(1 / 30)  # nothing else known yet: the long side
  clock.t += 4.0                         # steps 12..15 at 1 s each
  assert steps.rate(15) == pytest.approx(1.0)
  assert logs.minutes_left(15, 75, steps.rate(15)) == pytest.approx(1.0)


def test_rate_before_the_first_step_ends_counts_all_time(clock):
  steps = logs.StepClock(first_step=0)
  clock.t += 8.0
  assert steps.rate(2) == pytest.approx(0.25)


def test_metric_writer_keeps_lines_and_drops_a_cut_short_one(tmp_path):
  writer = logs.MetricWriter(str(tmp_path))
  writer.write(1, {"a": 1.0})
  writer.write(2, {"a": 2.0})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 3, "a"')          # a kill mid-line
  writer.keep(lambda line: line["step"] <= 1)
  assert writer.lines() == [{"step": 1, "a": 1.0}]
