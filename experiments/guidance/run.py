"""Guided sampling of the class-conditional MNIST UNet at few steps: the fixed samplers at a grid
of guidance weights, with and without a guidance interval, against GGDM+PRED+TIME learned by
DDSS with a fixed weight and with learned per-step weights.

Parts (run in the order given; every finished row goes to its CSV beside this file at once, and
a killed run resumes where it stopped: rerun the same command):
  strides    each fixed family (DDIM, DDPM, DPM-Solver++(2M), UniPC, iPNDM) at each stride, at
             the configured weight (configs/mnist_guided.py's), one evaluation seed: the stride
             of each family for the grid (screen.csv);
  grid       each family at its stride, at every --weights, without an interval and within
             --interval (screen.csv);
  learn      configs/mnist_guided.py at each K, with the weight fixed and learned
             (samplers/guided_<fixed|learned>_K<K>.json; one seed in screen.csv);
  finalists  the three best fixed settings of the screen and the learned samplers, on
             --finalist_seeds other evaluation seeds, the same noise and labels for all
             (paired; finalists.csv);
  report     RESULTS.md and weights.png from the CSVs.

Run: python -m experiments.guidance.run --workdir=/tmp/ddss_guidance [--steps=5,10,20]
     [--parts=strides,grid,learn,finalists,report]
"""

from __future__ import annotations

import csv
import os

from absl import app, flags, logging

from ddss_jax import run as run_lib, samplers
from ddss_jax.configs import mnist_guided
from ddss_jax.samplers import schedules
from ddss_jax.samplers.guidance import Guidance
from ddss_jax.util import files, logs
from experiments.guidance import report
from experiments.lib import records

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("strides", "grid", "learn", "finalists", "report")
FAMILIES = report.FAMILIES
STRIDES = ("linear", "quadratic", "logsnr")
COLUMNS = ("num_steps", "sampler", "stride", "weight", "interval", "seed", "fid", "kid",
           "class_fid", "class_accuracy", "class_accuracy_std", "confident_correct_share",
           "precision", "recall")
SCREEN_SEED = report.SCREEN_SEED
FINALISTS = 3  # fixed settings carried from the screen to the paired evaluation
LEARNED_NAMES = report.LEARNED_NAMES

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", "/tmp/ddss_guidance", "Checkpoints of the learned samplers.")
  flags.DEFINE_string("out", HERE, "Where the CSVs, samplers/, RESULTS.md and weights.png go.")
  flags.DEFINE_list("parts", list(PARTS), f"Any of {list(PARTS)}, in the order given.")
  flags.DEFINE_list("steps", ["5", "10", "20"], "K of every part.")
  flags.DEFINE_list("weights", ["0", "0.5", "1", "2", "3", "5"], "The grid's guidance weights.")
  flags.DEFINE_list("interval", ["0.28", "5.42"], "The guidance interval (low, high] of the grid, "
                    "in sigma = s / a (Kynkaanniemi et al.'s for EDM2-S at 512 x 512).")
  flags.DEFINE_integer("num_samples", 1000, "Evaluation samples per row.")
  flags.DEFINE_integer("finalist_seeds", report.FINALIST_SEEDS,
                       "Evaluation seeds of the finalists (paired).")
  flags.DEFINE_list("families", list(FAMILIES), "The fixed families of the screen.")
  flags.DEFINE_integer("train_steps", None, "DDSS steps of the learned samplers (default: "
                       "configs/mnist_guided.py's).")


def guided_config(num_steps: int):
  """configs/mnist_guided.py at K = num_steps."""
  config = mnist_guided.get_config()
  config.sampler.num_steps = num_steps
  return config


def append(path: str, rows: list[dict], row: dict) -> None:
  rows.append(row)
  with files.atomic_write(path, newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    for r in rows:
      writer.writerow({c: (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in COLUMNS})


def key_of(row: dict) -> tuple:
  return (int(row["num_steps"]), row["sampler"], row["stride"], float(row["weight"]),
          row["interval"], int(row["seed"]))


def interval_text(interval) -> str:
  return "-" if interval is None else f"({interval[0]:g}, {interval[1]:g}]"


class Study:
  def __init__(self, out: str, workdir: str):
    self.out, self.workdir = out, workdir
    self.problems = {}

  def problem(self, num_steps: int):
    """(configs/mnist_guided.py at K, its problem: the same at every K)."""
    if not self.problems:
      config = guided_config(num_steps)
      self.problems["problem"] = run_lib.build_problem(config, schedules.linear_beta(1000),
                                                       self.workdir)
    return guided_config(num_steps), self.problems["problem"]

  def evaluate(self, path: str, rows: list[dict], *, num_steps: int, name: str, stride: str,
               weight: float, interval, seed: int, sampler=None, params=None) -> dict:
    """The row of (sampler, seed), evaluated unless path's rows hold it."""
    row = {"num_steps": num_steps, "sampler": name, "stride": stride, "weight": float(weight),
           "interval": interval_text(interval), "seed": seed}
    done = {key_of(r): r for r in rows}
    if key_of(row) in done:
      return done[key_of(row)]
    config, problem = self.problem(num_steps)
    if sampler is None:
      guidance = Guidance(weight=float(weight), interval=interval)
      sampler = samplers.make(name, problem.schedule, num_steps, stride=stride,
                              guidance=guidance)
      params = {}
    (metrics,), _ = records.evaluate_on_seeds(
        sampler, params, problem, num_samples=FLAGS.num_samples,
        batch_size=config.eval.batch_size, seeds=(seed,), label=f"{name} K={num_steps}",
        metrics=COLUMNS[6:])
    row.update(metrics)
    logging.info("%s", row)
    append(path, rows, row)
    return row

  def screen_rows(self, num_steps: int) -> list[dict]:
    return [r for r in report.read(os.path.join(self.out, "screen.csv"))
            if int(r["num_steps"]) == num_steps and r["sampler"] in FAMILIES]

  def strides(self, num_steps: int) -> None:
    path = os.path.join(self.out, "screen.csv")
    rows, weight = report.read(path), guided_config(num_steps).sampler.guidance_weight
    for family in FLAGS.families:
      for stride in STRIDES:
        try:
          self.evaluate(path, rows, num_steps=num_steps, name=family, stride=stride,
                        weight=weight, interval=None, seed=SCREEN_SEED)
        except ValueError as e:  # the solvers need distinct times
          logging.info("skipped %s %s K=%d: %s", family, stride, num_steps, e)

  def grid(self, num_steps: int) -> None:
    path = os.path.join(self.out, "screen.csv")
    rows, weight = report.read(path), guided_config(num_steps).sampler.guidance_weight
    interval = tuple(float(v) for v in FLAGS.interval)
    for family in FLAGS.families:
      at_weight = [r for r in self.screen_rows(num_steps) if r["sampler"] == family
                   and r["weight"] == weight and r["interval"] == "-"]
      stride = min(at_weight, key=lambda r: r["fid"])["stride"]
      for w in (float(v) for v in FLAGS.weights):
        for within in (None, interval):
          if within is not None and w == 1.0:
            continue  # w = 1 inside the interval is w = 1 everywhere
          self.evaluate(path, rows, num_steps=num_steps, name=family, stride=stride,
                        weight=w, interval=within, seed=SCREEN_SEED)

  def learned_config(self, num_steps: int, rule: str):
    """configs/mnist_guided.py at K with guidance `rule` ("fixed" or "learned")."""
    config = guided_config(num_steps)
    config.sampler.guidance = rule
    if FLAGS.train_steps is not None:
      config.train.num_train_steps = FLAGS.train_steps
      config.train.validate_every_steps = min(config.train.validate_every_steps,
                                              FLAGS.train_steps)
    return config

  def learned(self, num_steps: int, rule: str):
    """(sampler, params, its file) of learned_config at K, learned in the workdir (resumed)
    and written to samplers/."""
    path = os.path.join(self.out, "samplers", f"guided_{rule}_K{num_steps}.json")
    if os.path.exists(path):
      return (*samplers.load(path), path)
    run = run_lib.setup(self.learned_config(num_steps, rule),
                        os.path.join(self.workdir, f"{rule}_K{num_steps}"))
    _, problem = self.problem(num_steps)
    writer = logs.MetricWriter(run.workdir)
    learned = run_lib.learn(run, problem, writer)
    writer.close()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    learned.save(path)
    return learned.sampler, learned.params, path

  def evaluate_learned(self, path: str, rows: list[dict], num_steps: int, seed: int) -> None:
    """The rows of both learned samplers at K on `seed`; on the screen's seed, each sampler's
    file records its row when the row is evaluated or the file lacks it (python -m
    experiments.lib.records re-evaluates it)."""
    for rule in ("fixed", "learned"):
      sampler, params, file = self.learned(num_steps, rule)
      known = len(rows)
      row = self.evaluate(path, rows, num_steps=num_steps, name=LEARNED_NAMES[rule],
                          stride=sampler.stride, weight=sampler.guidance.weight,
                          interval=sampler.guidance.interval, seed=seed, sampler=sampler,
                          params=params)
      if seed == SCREEN_SEED and (len(rows) > known or not records.has_record(file)):
        records.write_record(file, sampler, params, config=self.learned_config(num_steps, rule),
                             num_samples=FLAGS.num_samples,
                             batch_size=guided_config(num_steps).eval.batch_size, seeds=[seed],
                             row={c: row[c] for c in COLUMNS[6:]},
                             model=self.problem(num_steps)[1].model_info)

  def learn(self, num_steps: int) -> None:
    path = os.path.join(self.out, "screen.csv")
    self.evaluate_learned(path, report.read(path), num_steps, SCREEN_SEED)

  def finalists(self, num_steps: int) -> None:
    path = os.path.join(self.out, "finalists.csv")
    rows = report.read(path)
    best = sorted(self.screen_rows(num_steps), key=lambda r: r["fid"])[:FINALISTS]
    seeds = [SCREEN_SEED + 1000 * (i + 1) for i in range(FLAGS.finalist_seeds)]
    for seed in seeds:
      for r in best:
        interval = None if r["interval"] == "-" else tuple(
            float(v) for v in r["interval"].strip("(]").split(","))
        self.evaluate(path, rows, num_steps=num_steps, name=r["sampler"], stride=r["stride"],
                      weight=r["weight"], interval=interval, seed=seed)
      self.evaluate_learned(path, rows, num_steps, seed)


def main(argv):
  del argv
  logs.quiet_library_logs()
  unknown = sorted(set(FLAGS.parts) - set(PARTS))
  if unknown:
    raise app.UsageError(f"--parts: unknown {unknown}; valid: {list(PARTS)}")
  study = Study(FLAGS.out, FLAGS.workdir)
  for part in FLAGS.parts:
    if part == "report":
      report.write(FLAGS.out)
      continue
    for num_steps in (int(k) for k in FLAGS.steps):
      getattr(study, part)(num_steps)


if __name__ == "__main__":
  define_flags()
  app.run(main)
