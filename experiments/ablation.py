"""The DDSS optimisation's levers, each on and off: GGDM+PRED+TIME (KID loss) on the embedded
MNIST model (configs/mnist.py), learned at each K and evaluated on 1000 fresh samples against
the 1000 held-out digits (FID, KID, recall), with each run's training and validation curves.

Run (resumable: rerun the same command after a kill; finished rows are kept):
  python -m experiments.ablation --workdir=/tmp/ddss_ablation --steps=10,25
  python -m experiments.ablation --workdir=/tmp/ddss_ablation --steps=10 --variants=paper,bank
Writes --out (default experiments/ablation/): results.csv, RESULTS.md, curves_<variant>_K<k>.png.
"""

from __future__ import annotations

import csv
import os
import time

import jax
from absl import app, flags, logging

from configs import mnist
from ddss_jax import evaluate, experiment, files, logs, plots, sampling

# name: (what it changes, config overrides on configs/mnist.py at the row's K). "paper" is the
# protocol of experiments/paper_tables.py; every other variant turns one lever on, "all" all of
# them. The validation split (500 of the 4000 training digits) is carved only where a variant
# validates, so "paper" and the one-lever variants train on all 4000.
VARIANTS = {
    "paper": ("the paper tables' protocol: constant learning rate, last iterate", {}),
    "bank": ("KID against all 4000 training digits' features, computed once",
             {"loss.kid_bank_size": 4000}),
    "cosine": ("cosine learning rate to 0, 10 warm-up updates",
               {"train.lr_schedule": "cosine", "train.warmup_steps": 10}),
    "ema": ("EMA of the iterates (decay 0.95) saved and evaluated", {"train.ema_decay": 0.95}),
    "accumulate": ("2 batches of 64 per update (300 batches, 150 updates)",
                   {"train.accumulate_steps": 2, "train.num_train_steps": 300}),
    "validation": ("the best of 6 validations (every 25 of 150 steps, 500 samples against 500 "
                   "carved digits)", {"train.validate_every_steps": 25}),
    "ddpm_start": ("start from ancestral DDPM, linear stride (GGDM represents it exactly)",
                   {"sampler.eta": 1.0, "sampler.stride": "linear"}),
    "select_start": ("start from the fixed sampler (stride; DDIM or DDPM) with the best FID on "
                     "500 carved digits (docs/method.md, section 7)",
                     {"sampler.start": "select"}),
    "all": ("bank + cosine + ema + validation",
            {"loss.kid_bank_size": 3500, "train.lr_schedule": "cosine", "train.warmup_steps": 10,
             "train.ema_decay": 0.95, "train.validate_every_steps": 25}),
}
COLUMNS = ("variant", "num_steps", "fid", "kid", "kid_std", "precision", "recall", "best_step",
           "train_minutes")
HERE = os.path.dirname(os.path.abspath(__file__))

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", "/tmp/ddss_ablation", "Checkpoints and learned samplers.")
  flags.DEFINE_string("out", os.path.join(HERE, "ablation"), "results.csv, RESULTS.md, curves.")
  flags.DEFINE_list("steps", ["10", "25"], "K of the rows.")
  flags.DEFINE_list("variants", list(VARIANTS), f"Any of {list(VARIANTS)}.")
  flags.DEFINE_integer("num_samples", 1000, "Evaluation samples per row.")


def row_config(variant: str, num_steps: int, num_samples: int, base=mnist.get_config):
  """configs/mnist.py (or `base`, for tests) at K = num_steps with the variant's overrides."""
  config = base()
  config.sampler.num_steps = num_steps
  config.eval.num_samples = num_samples
  config.train.checkpoint_every_steps = 25
  for field, value in VARIANTS[variant][1].items():
    group, key = field.split(".")
    config[group][key] = value
  return config


def read_rows(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def write_rows(path: str, rows: list[dict]) -> None:
  with files.atomic_write(path, newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


def run_row(variant: str, num_steps: int, *, workdir: str, out: str, num_samples: int,
            base=mnist.get_config) -> dict:
  """Learns the variant's sampler at K (resuming from workdir), evaluates it, writes its curves."""
  config = row_config(variant, num_steps, num_samples, base)
  run = experiment.setup(config, os.path.join(workdir, f"{variant}_K{num_steps}"))
  writer = logs.MetricWriter(run.workdir)
  problem = experiment.build_problem(config, run.schedule, run.workdir, run.mesh)
  start = time.perf_counter()
  learned = experiment.learn(run, problem, writer)
  minutes = (time.perf_counter() - start) / 60
  writer.close()
  learned.save(os.path.join(run.workdir, "sampler.json"))
  os.makedirs(out, exist_ok=True)
  plots.training_curves(learned.history, os.path.join(out, f"curves_{variant}_K{num_steps}.png"))
  batches = sampling.sample_batches(learned.sampler, learned.params, problem,
                                    num_samples=num_samples, batch_size=config.eval.batch_size,
                                    seed=config.eval.seed)
  metrics, _ = evaluate.stream(batches, problem, num_samples=num_samples,
                               label=f"{variant} K={num_steps}", keep=0)
  return {"variant": variant, "num_steps": num_steps,
          **{c: f"{metrics[c]:.6g}" for c in ("fid", "kid", "kid_std", "precision", "recall")},
          "best_step": "" if learned.best_step is None else learned.best_step,
          "train_minutes": f"{minutes:.1f}"}


def report(rows: list[dict], path: str) -> None:
  """RESULTS.md: one table per K, the variants in VARIANTS' order, FID against "paper"."""
  md = ["# The DDSS optimisation's levers, on and off", "",
        "GGDM+PRED+TIME (KID loss) on the embedded MNIST model; held-out FID, KID (mean +- std "
        "over subsets) and recall of 1000 samples against the 1000 held-out digits. Generated "
        f"by `python -m experiments.ablation` at commit {logs.code_commit()}; what each variant "
        "changes:", ""]
  md += [f"- `{name}`: {what}" for name, (what, _) in VARIANTS.items()]
  for k in sorted({int(r["num_steps"]) for r in rows}):
    at_k = {r["variant"]: r for r in rows if int(r["num_steps"]) == k}
    base = float(at_k["paper"]["fid"]) if "paper" in at_k else None
    md += ["", f"## K = {k}", "",
           "| variant | FID | FID / paper's | KID | recall | best step | train min |",
           "|---|---|---|---|---|---|---|"]
    for name in VARIANTS:
      if name in at_k:
        r = at_k[name]
        ratio = f"{float(r['fid']) / base:.2f}" if base else "-"
        md.append(f"| {name} | {float(r['fid']):.3f} | {ratio} | {float(r['kid']):.4f} +- "
                  f"{float(r['kid_std']):.4f} | {float(r['recall']):.3f} | "
                  f"{r['best_step'] or '-'} | {r['train_minutes']} |")
  files.write_text(path, "\n".join(md) + "\n")


def main(argv):
  del argv
  logs.quiet_library_logs()
  unknown = [v for v in FLAGS.variants if v not in VARIANTS]
  if unknown:
    raise ValueError(f"--variants: unknown {unknown}; valid choices: {list(VARIANTS)}")
  os.makedirs(FLAGS.out, exist_ok=True)
  csv_path = os.path.join(FLAGS.out, "results.csv")
  rows = read_rows(csv_path)
  for k in (int(s) for s in FLAGS.steps):
    for variant in FLAGS.variants:
      if any((r["variant"], int(r["num_steps"])) == (variant, k) for r in rows):
        continue
      logging.info("ablation: %s at K=%d (%s)", variant, k, jax.default_backend())
      rows.append(run_row(variant, k, workdir=FLAGS.workdir, out=FLAGS.out,
                          num_samples=FLAGS.num_samples))
      write_rows(csv_path, rows)
      report(rows, os.path.join(FLAGS.out, "RESULTS.md"))
  report(rows, os.path.join(FLAGS.out, "RESULTS.md"))


if __name__ == "__main__":
  define_flags()
  app.run(main)
