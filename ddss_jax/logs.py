"""Console logging shared by the entry points."""

import json
import logging as py_logging
import os
import subprocess

import jax
from absl import logging


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


class MetricWriter:
  """Scalars to metrics.jsonl and the absl log; also TensorBoard events through clu where
  TensorFlow is installed (`pip install -e '.[tensorboard]'`). Only process 0 writes files."""

  def __init__(self, workdir: str):
    self._path = os.path.join(workdir, "metrics.jsonl")
    self._is_writer = jax.process_index() == 0
    self._tensorboard = None
    if self._is_writer:
      try:  # clu.metric_writers imports TensorFlow, an optional extra here.
        from clu import metric_writers  # pylint: disable=g-import-not-at-top
        self._tensorboard = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        logging.info("TensorFlow not installed: metrics go to %s only", self._path)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    logging.info("step %d: %s", step, ", ".join(f"{k}={v:.5g}" for k, v in scalars.items()))
    if not self._is_writer:
      return
    with open(self._path, "a") as f:
      f.write(json.dumps({"step": step, **scalars}) + "\n")
    if self._tensorboard is not None:
      self._tensorboard.write_scalars(step, scalars)
      self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
