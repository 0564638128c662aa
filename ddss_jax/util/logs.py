"""Console logging, the metric log and the progress clock shared by the entry points; the commit
that runs."""

import json
import logging as py_logging
import os
import subprocess
import time

import jax
from absl import logging

from ddss_jax.util import files


def _hide_orbax_info(record: py_logging.LogRecord) -> bool:
  """orbax logs a dozen INFO lines per checkpoint; keep its warnings and errors only."""
  return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def code_commit() -> str:
  """The commit of the ddss_jax checkout that runs, with "+changes" when its tracked files differ
  from it ("unknown" without git); $DDSS_JAX_COMMIT where the tree is a copy whose git metadata
  is not its own (a device host given a copy). For the provenance of published numbers."""
  if os.environ.get("DDSS_JAX_COMMIT"):
    return os.environ["DDSS_JAX_COMMIT"]
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    run = lambda *args: subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                                       check=True).stdout.strip()
    return run("rev-parse", "--short=10", "HEAD") + (
        "+changes" if run("status", "--porcelain", "--untracked-files=no") else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def quiet_library_logs() -> None:
  """Call once from an entry point's main(), after absl has set up its handler."""
  logging.get_absl_handler().addFilter(_hide_orbax_info)


class StepClock:
  """Speed of a loop whose first step also compiles, for time-left estimates.

  Compiling a DDSS step takes from seconds to minutes, as long as many steps, so a rate that
  counted it would promise far too much time left early on. After `first_done()`, `rate(done)`
  counts only the steps after the first; until a second step has run it falls back to the first
  step's speed (compilation included: an estimate on the long side).
  """

  now = staticmethod(time.perf_counter)  # seconds; tests replace it with a fake clock

  def __init__(self, first_step: int):
    self.first_step = first_step
    self._start = self.now()
    self._after_first: float | None = None

  def first_done(self) -> float:
    """Marks the end of the first step; returns its seconds (compilation included)."""
    self._after_first = self.now()
    return self._after_first - self._start

  def rate(self, done: int) -> float:
    """Steps per second up to step `done` (absolute), leaving out the first step."""
    now = self.now()
    if self._after_first is None or done <= self.first_step + 1 or now <= self._after_first:
      return (done - self.first_step) / max(now - self._start, 1e-9)
    return (done - self.first_step - 1) / (now - self._after_first)


def minutes_left(done: int, total: int, rate: float) -> float:
  """Minutes for the remaining `total - done` steps at `rate` steps per second."""
  return (total - done) / rate / 60


class MetricWriter:
  """Scalars to metrics.jsonl and the absl log; also TensorBoard events through clu where
  TensorFlow is installed (`pip install -e '.[tensorboard]'`). Only process 0 writes files;
  workdir None writes none. `lines()` gives back what was logged."""

  def __init__(self, workdir: str | None):
    self._path = None if workdir is None else os.path.join(workdir, "metrics.jsonl")
    self._is_writer = workdir is not None and jax.process_index() == 0
    self._tensorboard = None
    self._written: list[dict[str, float]] = []
    if self._is_writer:
      try:  # clu.metric_writers imports TensorFlow, an optional extra here.
        from clu import metric_writers  # pylint: disable=g-import-not-at-top
        self._tensorboard = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        logging.info("TensorFlow not installed: metrics go to %s only", self._path)

  def keep(self, predicate) -> None:
    """Keeps the lines of metrics.jsonl for which predicate(line dict) holds, and drops a last
    line that a kill cut short; rewrites the file atomically. TensorBoard events stay as they
    are (TensorBoard shows the newest value written for a step)."""
    if not self._is_writer or not os.path.exists(self._path):
      return
    with open(self._path, encoding="utf-8") as f:
      lines = f.read().splitlines()
    kept = []
    for text in lines:
      try:
        line = json.loads(text)
      except json.JSONDecodeError:
        logging.warning("dropping a cut-short line of %s: %r", self._path, text[:80])
        continue
      if predicate(line):
        kept.append(text)
    if len(kept) != len(lines):
      files.write_text(self._path, "".join(t + "\n" for t in kept))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    logging.info("step %d: %s", step, ", ".join(f"{k}={v:.5g}" for k, v in scalars.items()))
    self._written.append({"step": step, **scalars})
    if not self._is_writer:
      return
    with open(self._path, "a") as f:
      f.write(json.dumps({"step": step, **scalars}) + "\n")
    if self._tensorboard is not None:
      self._tensorboard.write_scalars(step, scalars)
      self._tensorboard.flush()

  def lines(self) -> list[dict[str, float]]:
    """Every metric line: metrics.jsonl's (a resumed run's earlier lines included) where this
    process writes one, else the lines written through this writer."""
    if self._is_writer and os.path.exists(self._path):
      with open(self._path, encoding="utf-8") as f:
        return [json.loads(text) for text in f.read().splitlines()]
    return list(self._written)

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
