"""Console logging shared by the entry points."""

import json
import logging as py_logging
import os

import jax
from absl import logging


def _hide_orbax_info(record: py_logging.LogRecord) -> bool:
  """orbax logs a dozen INFO lines per checkpoint; keep its warnings and errors only."""
  return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


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
