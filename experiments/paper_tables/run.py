"""The paper's tables on the embedded default (shipped MNIST UNet and classifier), and past them.

Evaluates fixed samplers and samplers learned by DDSS at several K, in parts (fixed, k5 ... k25,
report); each finished row goes to results.csv beside this file at once, and a killed run resumes
where it stopped: rerun the same command. Run (all parts, or some):
  python -m experiments.paper_tables.run --workdir=/tmp/ddss_paper_tables
  python -m experiments.paper_tables.run --workdir=/tmp/ddss_paper_tables --parts=fixed,k5,report
An independent rerun (other training and evaluation noise) set against the committed rows:
  python -m experiments.paper_tables.run --seed=1 --workdir=/tmp/ddss_rerun \
    --out=/tmp/rerun_seed1 --parts=fixed,k5,report --fixed_steps=5,10 \
    --compare_to=experiments/paper_tables/results.csv
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import numpy as np
from absl import app, flags, logging

from ddss_jax import run as run_lib, samplers
from ddss_jax.configs import mnist
from ddss_jax.evaluation import drawing
from ddss_jax.samplers import schedules
from ddss_jax.util import files, logs
from experiments.lib import records
from experiments.lib.protocol import (
  ALL_LEARNED_STEPS,
  COLUMNS,
  FIXED,
  FIXED_STEPS,
  GRID_IMAGES,
  GRID_STEPS,
  LEARNED,
  ON,
  PARTS,
  PROTOCOL,
  TEACHER_ROW,
  apply_overrides,
  check_choices,
  fields_of,
  learned_at,
)
from experiments.lib.table import read_rows, row_name, write_rows
from experiments.paper_tables import report

HERE = os.path.dirname(os.path.abspath(__file__))

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", "/tmp/ddss_paper_tables",
                      "Checkpoints, learned samplers, teacher pool and grid samples.")
  flags.DEFINE_string("out", HERE, "Where results.csv, RESULTS.md and the pictures go.")
  flags.DEFINE_list("parts", list(PARTS), f"Any of {list(PARTS)}, run in the order given.")
  flags.DEFINE_integer("train_steps", mnist.get_config().train.num_train_steps,
                       "DDSS optimisation steps of each learned sampler (configs/mnist.py's).")
  flags.DEFINE_integer("num_samples", 1000, "Evaluation samples per sampler.")
  flags.DEFINE_list("fixed_steps", [str(k) for k in FIXED_STEPS], "K of the fixed samplers.")
  flags.DEFINE_integer("seed", 0, "Added to the training seed (0) and the evaluation seed (1234): "
                       "another value is an independent rerun (fresh noise and data order).")
  flags.DEFINE_integer("eval_seeds", 2, "Evaluation seeds of every row, 1 or 2: the evaluation "
                       "seed, and with 2 also a second one (results.csv's fid_2, kid_2).")
  flags.DEFINE_string("compare_to", None, "A results.csv to compare this run's rows with (e.g. "
                      "experiments/paper_tables/results.csv from a rerun with another --seed).")


class Runner:
  """Evaluates rows, appends each to results.csv as it finishes, times the parts.

  Args:
    out, workdir: see the flags.
    train_steps, num_samples, fixed_steps, seed, eval_seeds: see the flags.
    compare_rows: rows of another results.csv, for the report's rerun comparison.
    edit_config: optional function applied to every config (tests shrink the sizes with it).
    protocol: config overrides of the learned rows (experiments.lib.protocol.PROTOCOL).
  """

  def __init__(self, out: str, workdir: str, *, train_steps: int, num_samples: int,
               fixed_steps=FIXED_STEPS, seed: int = 0, eval_seeds: int = 2, compare_rows=None,
               edit_config=None, protocol=None):
    self.out, self.workdir = out, workdir
    self.train_steps, self.num_samples = train_steps, num_samples
    self.fixed_steps = [int(k) for k in fixed_steps]
    self.seed, self.compare_rows = seed, compare_rows
    self.edit_config = edit_config or (lambda config: None)
    self.protocol = dict(PROTOCOL if protocol is None else protocol)
    self.csv_path = os.path.join(out, "results.csv")
    self.parts_path = os.path.join(out, "parts.json")
    self.rows = read_rows(self.csv_path)
    self.config = self.table_config("ddim", 5, "quadratic", "kid")
    learned_config = self.table_config("ddim", 5, "quadratic", "kid")
    # A bad field fails here, before any row runs.
    apply_overrides(learned_config, self.protocol, source="experiments.lib.protocol.PROTOCOL")
    # What the learned rows' levers are (configs/mnist.py's, after the protocol), for the report.
    self.levers = {f: v for f, v in fields_of(learned_config).items() if f in ON}
    self.validation_size = learned_config.train.validation_size
    self.seeds = records.eval_seeds(self.config.eval.seed, eval_seeds)
    self.schedule = schedules.make(self.config.schedule.name, self.config.schedule.num_timesteps)
    # Of the code that runs now, whatever happens to the checkout later.
    self.commit = logs.code_commit()
    self._problem = None

  def table_config(self, family: str, num_steps: int, stride: str, loss: str):
    """configs/mnist.py with this sampler and loss, and the runner's sizes."""
    config = mnist.get_config()
    config.sampler.update(family=family, num_steps=num_steps, stride=stride)
    config.loss.update(name=loss, teacher_dir=os.path.join(self.workdir, "teacher"))
    config.train.update(num_train_steps=self.train_steps, checkpoint_every_steps=20)
    config.eval.num_samples = self.num_samples
    config.train.seed += self.seed
    config.eval.seed += self.seed
    self.edit_config(config)
    return config

  @property
  def problem(self):
    if self._problem is None:
      self._problem = run_lib.build_problem(self.config, self.schedule, self.workdir)
    return self._problem

  def done(self, sampler: str, num_steps: int, loss: str) -> bool:
    return any((r["sampler"], r["num_steps"], r["loss"]) == (sampler, num_steps, loss)
               for r in self.rows)

  def evaluate(self, name: str, loss: str, sampler: samplers.Sampler, params, problem,
               config=None) -> None:
    """Evaluates one row on every evaluation seed and appends it to results.csv; a learned row
    (config: the one it was learned with) also goes to <out>/samplers/<family>_<loss>_K<k>.json.
    """
    label = f"{name} ({loss}) K={sampler.num_steps}"
    results, kept = records.evaluate_on_seeds(
        sampler, params, problem, num_samples=self.num_samples,
        batch_size=self.config.eval.batch_size, seeds=self.seeds, label=label, keep=GRID_IMAGES)
    metrics = results[0]
    if sampler.num_steps in GRID_STEPS:
      self.save_grid(name, loss, sampler.num_steps, kept)
    row = {"sampler": name, "num_steps": sampler.num_steps, "loss": loss,
           **{c: metrics[c] for c in COLUMNS[3:]},
           "fid_2": results[1]["fid"] if len(results) > 1 else None,
           "kid_2": results[1]["kid"] if len(results) > 1 else None}
    if config is not None:
      records.write_record(
          os.path.join(self.out, "samplers", f"{name}_{loss}_K{sampler.num_steps}.json"),
          sampler, params, config=config, num_samples=self.num_samples,
          batch_size=self.config.eval.batch_size, seeds=self.seeds, row=row)
    self.rows.append(row)
    write_rows(self.csv_path, self.rows)
    self.tick(row_done=True)
    logging.info("%s: FID %.4g, KID %.4g", label, metrics["fid"], metrics["kid"])

  def grid_path(self, name: str, loss: str, num_steps: int) -> str:
    return os.path.join(self.workdir, "grids", report.grid_file(name, loss, num_steps))

  def save_grid(self, name: str, loss: str, num_steps: int, images: np.ndarray) -> None:
    """images [GRID_IMAGES, H, W, C] in [-1, 1], as uint8 in the workdir's grids/."""
    path = self.grid_path(name, loss, num_steps)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with files.atomic_write(path, "wb") as f:
      np.save(f, np.round((np.clip(images, -1, 1) + 1) * 127.5).astype(np.uint8))

  def draw_missing_grids(self) -> None:
    """Draws the grid of every row at GRID_STEPS that has none in the workdir: rows finished in
    another workdir (an earlier session's, or the ablation's fixed rows) still get their picture.
    The grid is the row's own first samples: the first evaluation seed and batch size, so the
    same noise as its evaluation (drawing.sample_batches: batch b from fold_in(seed, b)). A
    learned row's sampler is read from <out>/samplers/; a row without one is skipped."""
    for row in self.rows:
      name, loss, num_steps = row["sampler"], row["loss"], row["num_steps"]
      if num_steps not in GRID_STEPS or os.path.exists(self.grid_path(name, loss, num_steps)):
        continue
      if loss == "none":
        family, _, stride = name.partition(":")
        sampler, params = samplers.make(family, self.schedule, num_steps, stride=stride), {}
      else:
        path = os.path.join(self.out, "samplers", f"{name}_{loss}_K{num_steps}.json")
        if not os.path.exists(path):
          logging.warning("no grid for %s (%s) K=%d: %s is missing", name, loss, num_steps, path)
          continue
        sampler, params = samplers.load(path)
      logging.info("drawing the grid of %s (%s) K=%d", name, loss, num_steps)
      images = drawing.draw_samples(sampler, params, self.problem,
                                    num_samples=min(GRID_IMAGES, self.num_samples),
                                    batch_size=self.config.eval.batch_size, seed=self.seeds[0])
      self.save_grid(name, loss, num_steps, images)

  def fixed(self) -> None:
    for num_steps in self.fixed_steps:
      for family, stride in FIXED:
        name = row_name(family, stride)
        if self.done(name, num_steps, "none"):
          continue
        try:
          sampler = samplers.make(family, self.schedule, num_steps, stride=stride)
        except ValueError as e:  # e.g. the solvers on repeated quadratic times
          logging.warning("skipping %s K=%d: %s", name, num_steps, e)
          continue
        self.evaluate(name, "none", sampler, {}, self.problem)
    family, stride, num_steps = TEACHER_ROW
    if not self.done(row_name(family, stride), num_steps, "none"):
      self.evaluate(row_name(family, stride), "none",
                    samplers.make(family, self.schedule, num_steps, stride=stride), {},
                    self.problem)

  def learned(self, num_steps: int) -> None:
    for family, loss, stride in learned_at(num_steps, LEARNED, ALL_LEARNED_STEPS):
      if self.done(family, num_steps, loss):
        continue
      config = self.table_config(family, num_steps, stride, loss)
      apply_overrides(config, self.protocol, source="experiments.lib.protocol.PROTOCOL")
      run = run_lib.setup(config, os.path.join(self.workdir, "runs",
                                               f"{family}_{loss}_K{num_steps}"))
      writer = logs.MetricWriter(run.workdir)
      problem = run_lib.build_problem(config, run.schedule, run.workdir, run.mesh)
      learned = run_lib.learn(run, problem, writer)
      writer.close()
      learned.save(os.path.join(run.workdir, "sampler.json"))
      self.evaluate(family, loss, learned.sampler, learned.params, problem, config)

  def run_part(self, part: str) -> None:
    self._part, self._run, self._mark = part, None, time.perf_counter()
    if part == "fixed":
      self.fixed()
    elif part != "report":
      self.learned(int(part[1:]))
    else:
      self.draw_missing_grids()
    self.tick()
    report.render(self.out, self.workdir, self.rows, self.read_parts(), **self.report_args())

  def report_args(self) -> dict:
    """report.markdown's keyword arguments for this runner's rows."""
    return dict(seeds=(self.config.train.seed,) + self.seeds, protocol=self.protocol,
                levers=self.levers, validation_size=self.validation_size,
                compare=self.compare_rows)

  def read_parts(self) -> dict:
    if not os.path.exists(self.parts_path):
      return {}
    with open(self.parts_path) as f:
      return json.load(f)

  def tick(self, row_done: bool = False) -> None:
    """Adds the seconds since the last tick to the part's total and to this invocation's entry
    (commit, machine), after every row: a killed invocation loses only its unfinished row."""
    now = time.perf_counter()
    seconds, self._mark = now - self._mark, now
    if self._part == "report":
      return
    parts = self.read_parts()
    entry = parts.setdefault(self._part, {"seconds": 0.0, "runs": []})
    if self._run is None:
      self._run = len(entry["runs"])
      entry["runs"].append({"seconds": 0.0, "rows": 0, "commit": self.commit,
                            "backend": jax.default_backend(),
                            "device": jax.devices()[0].device_kind,
                            "cpus": os.cpu_count(), "machine": platform.machine(),
                            "train_steps": self.train_steps, "num_samples": self.num_samples,
                            "seed": self.seed, "eval_seeds": list(self.seeds),
                            "protocol": self.protocol})
    run = entry["runs"][self._run]
    entry["seconds"] += seconds
    run["seconds"] = round(run["seconds"] + seconds, 1)
    run["rows"] += int(row_done)
    files.write_json(self.parts_path, parts)



def committed_results(workdir: str) -> str:
  """The RESULTS.md that the committed rows, parts, figures and reading beside this file make,
  with the default flags (what `--parts=report` writes; nothing is evaluated)."""
  runner = Runner(HERE, workdir, train_steps=150, num_samples=1000)
  return report.markdown(HERE, runner.rows, runner.read_parts(), **runner.report_args())

def main(argv):
  del argv
  logs.quiet_library_logs()
  check_choices("parts", FLAGS.parts, PARTS)
  bad_steps = [k for k in FLAGS.fixed_steps if not k.isdigit() or int(k) < 1]
  if bad_steps or FLAGS.train_steps < 1 or FLAGS.num_samples < 2 or FLAGS.seed < 0:
    raise ValueError(f"need positive --fixed_steps (got {bad_steps}), --train_steps >= 1 (got "
                     f"{FLAGS.train_steps}), --num_samples >= 2 (got {FLAGS.num_samples}) and "
                     f"--seed >= 0 (got {FLAGS.seed})")
  compare_rows = None
  if FLAGS.compare_to:
    if not os.path.isfile(FLAGS.compare_to):
      raise FileNotFoundError(f"--compare_to={FLAGS.compare_to}: no such results.csv")
    compare_rows = (FLAGS.compare_to, read_rows(FLAGS.compare_to))
  os.makedirs(FLAGS.out, exist_ok=True)
  runner = Runner(FLAGS.out, FLAGS.workdir, train_steps=FLAGS.train_steps,
                  num_samples=FLAGS.num_samples, fixed_steps=FLAGS.fixed_steps, seed=FLAGS.seed,
                  eval_seeds=FLAGS.eval_seeds, compare_rows=compare_rows)
  for part in FLAGS.parts:  # in the order given
    logging.info("part %s", part)
    runner.run_part(part)


if __name__ == "__main__":
  define_flags()
  app.run(main)
