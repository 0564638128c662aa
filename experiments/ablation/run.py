"""The DDSS optimisation's levers, each on and off: GGDM+PRED+TIME (KID loss) on the embedded
MNIST model (configs/mnist.py), learned at each K and evaluated on 1000 fresh samples against
the 1000 held-out digits (FID, KID, recall), with each run's training and validation curves.

Run (resumable: rerun the same command after a kill; finished rows are kept):
  python -m experiments.ablation.run --workdir=/tmp/ddss_ablation --steps=10,25
  python -m experiments.ablation.run --workdir=/tmp/ddss_ablation --steps=10 --variants=none,bank
  [--fixed_results=experiments/ablation/fixed_results.csv]  (the best fixed sampler beside them)
Writes --out (default experiments/ablation/): results.csv, RESULTS.md, curves_<variant>_K<k>.png.
"""

from __future__ import annotations

import csv
import functools
import os
import time

import jax
import numpy as np
from absl import app, flags, logging

from ddss_jax import run as run_lib
from ddss_jax.configs import mnist
from ddss_jax.util import files, logs, plots
from experiments.lib import records
from experiments.lib.protocol import LEVERS, ON, SEED2_COLUMNS, apply_overrides, check_choices
from experiments.lib.table import best_fixed
from experiments.lib.verdicts import beats_by_seed_difference

# name: (what it changes, config overrides or a function of K giving them). Every row starts
# from configs/mnist.py with its levers off (LEVERS_OFF below); "none" adds nothing, every
# other variant turns one lever (paper_protocol.LEVERS) on, "all" several, and
# "all_noise_free" is configs/mnist.py's default (ON).
# The validation split (500 of the 4000 training digits) is carved only where a variant
# validates or selects, so the others train on all 4000.
ALL = {field: value for field, value in ON.items() if field != "sampler.start"}
SELECT = {**ALL, **LEVERS["select_start"][1]}  # all + the start chosen among every candidate
VARIANTS = {
    "none": ("every lever off (configs/mnist.py with levers=False: the protocol of the paper "
             "tables committed before the levers)", {}),
    **LEVERS,
    "all": ("bank + cosine + ema + validation (the bank of the 3500 digits left to train on)",
            ALL),
    "all_select": ("all + select_start (the start chosen on the same 500 carved digits among "
                   "every fixed sampler the family represents)",
                   SELECT),
    "all_select_lr1e-3": ("all_select at learning rate 1e-3",
                        {**SELECT, **LEVERS["lr1e-3"][1]}),
    # Starts without noise: from K = 15 on all_select starts from ancestral DDPM, and the learned
    # GGDM's FID changes between evaluation seeds by more than its gain over the best fixed
    # sampler (a UniPC, whose seed differences are about a fifth of an ancestral row's). These
    # two keep the noise out: UniPC with its times learned, GGDM from a noise-free start.
    "all_select_unipc_time": ("all_select with the family unipc+time: UniPC (the stride chosen "
                              "on the carved digits) with its K + 1 times learned, no noise",
                              {**SELECT, "sampler.family": "unipc+time"}),
    "all_noise_free": ("all, the start chosen on the same 500 carved digits among the fixed "
                       "samplers without noise (DDIM, DPM-Solver++(2M), UniPC; DDPM left out): "
                       "configs/mnist.py's default", ON),
    # Adam moves every coefficient by about the learning rate per update: a smaller step lets
    # the 64-sample loss's noise carry the walk less far.
    "all_noise_free_lr1e-3": ("all_noise_free at learning rate 1e-3",
                            {**ON, **LEVERS["lr1e-3"][1]}),
    "all_noise_free_lr_by_k": ("all_noise_free at learning rate 5e-3 * 5 / K (5e-3 at K = 5, "
                               "1e-3 at K = 25)",
                               lambda num_steps: {**ON,
                                                  "train.learning_rate": 5e-3 * 5 / num_steps}),
    # How far the same config lands from another draw of the optimisation's randomness: the
    # scale against which a lever's change at one K is read.
    "all_noise_free_seed1": ("all_noise_free with training seed 1 (the default's 0): the "
                             "optimisation's noise, the validation split and its samples; the "
                             "evaluation's samples unchanged (its KID subsets follow the seed)",
                             {**ON, "train.seed": 1}),
    "all_noise_free_lr1e-3_seed1": ("all_noise_free_lr1e-3 with training seed 1",
                                  {**ON, **LEVERS["lr1e-3"][1], "train.seed": 1}),
    "all_noise_free_draws4": ("all_noise_free with every validation the mean over 4 draws of "
                              "500 samples (train.validation_draws = 4)",
                              {**ON, "train.validation_draws": 4}),
    "all_noise_free_draws4_seed1": ("all_noise_free_draws4 with training seed 1",
                                    {**ON, "train.validation_draws": 4, "train.seed": 1}),
    "all_ddim_linear": ("all, starting from DDIM on the linear stride (no start choice)",
                        {**ALL, "sampler.stride": "linear", "sampler.eta": 0.0}),
    "all_ddim_linear_seed1": ("all_ddim_linear with training seed 1",
                              {**ALL, "sampler.stride": "linear", "sampler.eta": 0.0,
                               "train.seed": 1}),
    "all_noise_free_seed2": ("all_noise_free with training seed 2", {**ON, "train.seed": 2}),
    "all_noise_free_lr1e-3_seed2": ("all_noise_free_lr1e-3 with training seed 2",
                                  {**ON, **LEVERS["lr1e-3"][1], "train.seed": 2}),
    "all_ddim_linear_seed2": ("all_ddim_linear with training seed 2",
                              {**ALL, "sampler.stride": "linear", "sampler.eta": 0.0,
                               "train.seed": 2}),
    # From K = 15 on, the training KID of 64 samples sits at its noise floor from the start
    # (experiments/ablation/RESULTS.md): 16x the samples per update cut its std 4x. A GPU run.
    "all_select_large": ("all_select with 16 batches of 64 per update (2400 batches, 150 "
                         "updates; validation every 25 updates)",
                         {**SELECT, "train.accumulate_steps": 16, "train.num_train_steps": 2400,
                          "train.validate_every_steps": 400}),
}
LEVERS_OFF = functools.partial(mnist.get_config, levers=False)  # every row's base config
COLUMNS = ("variant", "num_steps", "fid", "kid", "kid_std", "precision", "recall", "best_step",
           "train_minutes") + SEED2_COLUMNS  # the second seed's: empty in older files
HERE = os.path.dirname(os.path.abspath(__file__))

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", "/tmp/ddss_ablation", "Checkpoints and learned samplers.")
  flags.DEFINE_string("out", HERE, "results.csv, RESULTS.md, curves.")
  flags.DEFINE_list("steps", ["10", "25"], "K of the rows.")
  flags.DEFINE_list("variants", list(VARIANTS), f"Any of {list(VARIANTS)}.")
  flags.DEFINE_integer("num_samples", 1000, "Evaluation samples per row.")
  flags.DEFINE_integer("eval_seeds", 2, "Evaluation seeds of every row, 1 or 2 (the second: "
                       "results.csv's fid_2, kid_2).")
  flags.DEFINE_string("fixed_results", None, "A results.csv of paper_tables.py holding fixed "
                      "samplers' rows: RESULTS.md then names the best fixed sampler at each K "
                      "and each variant's FID against it.")


def row_config(variant: str, num_steps: int, num_samples: int, base=LEVERS_OFF):
  """configs/mnist.py with its levers off (or `base`, for tests) at K = num_steps, with the
  variant's overrides."""
  config = base()
  config.sampler.num_steps = num_steps
  config.eval.num_samples = num_samples
  config.train.checkpoint_every_steps = 25
  overrides = VARIANTS[variant][1]
  if callable(overrides):  # a variant whose overrides depend on K
    overrides = overrides(num_steps)
  apply_overrides(config, overrides, source=f"ablation variant {variant!r}")
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
            eval_seeds: int = 2, base=LEVERS_OFF) -> dict:
  """Learns the variant's sampler at K (resuming from workdir), evaluates it on each evaluation
  seed, writes its curves and the sampler (out/samplers/<variant>_K<k>.json)."""
  config = row_config(variant, num_steps, num_samples, base)
  run = run_lib.setup(config, os.path.join(workdir, f"{variant}_K{num_steps}"))
  writer = logs.MetricWriter(run.workdir)
  problem = run_lib.build_problem(config, run.schedule, run.workdir, run.mesh)
  start = time.perf_counter()
  learned = run_lib.learn(run, problem, writer)
  minutes = (time.perf_counter() - start) / 60
  writer.close()
  learned.save(os.path.join(run.workdir, "sampler.json"))
  os.makedirs(out, exist_ok=True)
  plots.training_curves(learned.history, os.path.join(out, f"curves_{variant}_K{num_steps}.png"))
  seeds = records.eval_seeds(config.eval.seed, eval_seeds)
  results, _ = records.evaluate_on_seeds(
      learned.sampler, learned.params, problem, num_samples=num_samples,
      batch_size=config.eval.batch_size, seeds=seeds, label=f"{variant} K={num_steps}")
  metrics = results[0]
  row = {"variant": variant, "num_steps": num_steps,
         **{c: f"{metrics[c]:.6g}" for c in ("fid", "kid", "kid_std", "precision", "recall")},
         "best_step": "" if learned.best_step is None else learned.best_step,
         "train_minutes": f"{minutes:.1f}",
         **{f"{c}_2": f"{results[1][c]:.6g}" if len(results) > 1 else "" for c in ("fid", "kid")}}
  records.write_record(
      os.path.join(out, "samplers", f"{variant}_K{num_steps}.json"), learned.sampler,
      learned.params, config=config, num_samples=num_samples,
      batch_size=config.eval.batch_size, seeds=seeds,
      row={**{c: metrics[c] for c in records.METRICS},
           **{f"{c}_2": results[1][c] if len(results) > 1 else None for c in ("fid", "kid")}})
  return row


def fids(row: dict) -> str:
  """A results.csv row's FID text: "FID 0.440" and, where run, ", second seed 0.439"."""
  fid_2 = f", second seed {float(row['fid_2']):.3f}" if row.get("fid_2") else ""
  return f"FID {float(row['fid']):.3f}{fid_2}"


def beats_2k(at_k: dict[str, dict], fixed: dict, steps: int) -> str:
  """The sentence naming the best fixed sampler at 2K (`steps`) and the variants at K whose FID
  is below its on every evaluation seed both were evaluated on."""
  def below(r):
    pairs = [(r["fid"], fixed["fid"])] + ([(r["fid_2"], fixed["fid_2"])]
                                          if r.get("fid_2") and fixed.get("fid_2") else [])
    return all(float(a) < float(b) for a, b in pairs)
  winners = [name for name in VARIANTS if name in at_k and below(at_k[name])]
  return (f"Best fixed sampler at 2K = {steps}: {fixed['sampler']}, {fids(fixed)}. Variants "
          "below it on every seed: "
          f"{', '.join(f'`{w}`' for w in winners) or 'no variant'}.")


def seed_spread(fixed_rows: list[dict], num_steps: int) -> str:
  """The sentence on the evaluation noise at K: the median and the largest |FID(seed 1) -
  FID(seed 2)| of the fixed samplers evaluated on both seeds, or "" where none was."""
  diffs = sorted((abs(float(r["fid"]) - float(r["fid_2"])), r["sampler"]) for r in fixed_rows
                 if r["loss"] == "none" and int(r["num_steps"]) == num_steps and r.get("fid_2"))
  if not diffs:
    return ""
  median = float(np.median([d for d, _ in diffs]))
  return (f"Evaluation noise at K = {num_steps}: the {len(diffs)} fixed samplers' FIDs change "
          f"between the two seeds by {median:.3f} in the median and by at most "
          f"{diffs[-1][0]:.3f} ({diffs[-1][1]}).")


def training_seed_spread(at_k: dict[str, dict]) -> list[str]:
  """One sentence per variant run with training seeds 0 and 1 at this K (`<v>` and `<v>_seed1`
  in `at_k`, a K's results.csv rows by variant): each evaluation seed's FID for both training
  seeds, their change and their mean; [] where no variant has its seed-1 twin."""
  lines = []
  for name in VARIANTS:
    twin = at_k.get(f"{name}_seed1")
    if name not in at_k or twin is None:
      continue
    per_seed = []
    for column in ("fid", "fid_2"):
      if at_k[name].get(column) and twin.get(column):
        a, b = float(at_k[name][column]), float(twin[column])
        per_seed.append(f"{a:.3f} / {b:.3f} (change {abs(a - b):.3f}, mean {(a + b) / 2:.3f})")
    lines.append(f"Training seed 0 / 1 of `{name}`: FID " + "; second evaluation seed ".join(
        per_seed) + ".")
  return lines


def report(rows: list[dict], path: str, fixed_rows: list[dict] | None = None,
           fixed_source: str = "") -> None:
  """Writes markdown(...) to `path`."""
  files.write_text(path, markdown(rows, fixed_rows, fixed_source))


def committed_results() -> str:
  """The RESULTS.md that the committed rows beside this file make, set against the committed
  fixed rows (what the study's command writes; nothing is evaluated)."""
  return markdown(read_rows(os.path.join(HERE, "results.csv")),
                  read_rows(os.path.join(HERE, "fixed_results.csv")),
                  "experiments/ablation/fixed_results.csv")


def markdown(rows: list[dict], fixed_rows: list[dict] | None = None,
             fixed_source: str = "") -> str:
  """RESULTS.md: one table per K, the variants in VARIANTS' order, FID against "none" and,
  given the paper tables' fixed rows (read from `fixed_source`), against the best fixed
  sampler."""
  md = ["# The DDSS optimisation's levers, on and off", "",
        "GGDM+PRED+TIME (KID loss) on the embedded MNIST model; held-out FID, KID (mean +- std "
        "over subsets) and recall of 1000 samples against the 1000 held-out digits (the FID of a "
        "second evaluation seed beside it, where run). Each learned sampler is in `samplers/` "
        "(re-evaluate: `python -m experiments.lib.records`). Generated "
        "by `python -m experiments.ablation.run`. \"train min\" is "
        "the wall time of learning (the start's choice, the DDSS steps and the validations) on "
        "the machine as it was: rows that shared the cores "
        "with other runs took longer, and a resumed row counts only the run that finished it. "
        "\"beats by > seed diff.\": below the best fixed sampler "
        "at K on each seed by more than the larger change between the seeds of the two rows. "
        "What each variant changes:", ""]
  md += [f"- `{name}`: {what}" for name, (what, _) in VARIANTS.items()]
  for k in sorted({int(r["num_steps"]) for r in rows}):
    at_k = {r["variant"]: r for r in rows if int(r["num_steps"]) == k}
    base = float(at_k["none"]["fid"]) if "none" in at_k else None
    fixed = best_fixed(fixed_rows or [], k)
    md += ["", f"## K = {k}", ""]
    if fixed is not None:
      md += [f"Best fixed sampler at K = {k} by FID (of every DDPM/DDIM stride, DPM-Solver++(2M) "
             f"and UniPC step choice in `{fixed_source}`): {fixed['sampler']}, {fids(fixed)}, "
             f"recall {float(fixed['recall']):.3f}.", ""]
    if spread := seed_spread(fixed_rows or [], k):
      md += [spread, ""]
    if seeds := training_seed_spread(at_k):
      md += ["\n".join(f"- {line}" for line in seeds), ""]
    at_2k = best_fixed(fixed_rows or [], 2 * k)
    if at_2k is not None:
      md += [beats_2k(at_k, at_2k, 2 * k), ""]
    md += ["| variant | FID | FID / none's | FID / best fixed | FID, second seed | beats by > "
           "seed diff. | KID | recall | best step | train min |", "|---" * 10 + "|"]
    for name in VARIANTS:
      if name in at_k:
        r = at_k[name]
        ratio = f"{float(r['fid']) / base:.2f}" if base else "-"
        to_fixed = f"{float(r['fid']) / float(fixed['fid']):.2f}" if fixed else "-"
        fid_2 = f"{float(r['fid_2']):.3f}" if r.get("fid_2") else "-"
        best_step = "-" if r["best_step"] in ("", None) else r["best_step"]
        md.append(f"| {name} | {float(r['fid']):.3f} | {ratio} | {to_fixed} | {fid_2} | "
                  f"{beats_by_seed_difference(r, fixed)} | "
                  f"{float(r['kid']):.4f} +- {float(r['kid_std']):.4f} | "
                  f"{float(r['recall']):.3f} | {best_step} | {r['train_minutes']} |")
  return "\n".join(md) + "\n"


def main(argv):
  del argv
  logs.quiet_library_logs()
  check_choices("variants", FLAGS.variants, VARIANTS)
  records.eval_seeds(0, FLAGS.eval_seeds)  # 1 or 2, checked before anything runs
  if FLAGS.fixed_results and not os.path.isfile(FLAGS.fixed_results):
    raise FileNotFoundError(f"--fixed_results={FLAGS.fixed_results}: no such file (a "
                            "results.csv that experiments/paper_tables/run.py wrote)")
  os.makedirs(FLAGS.out, exist_ok=True)
  csv_path = os.path.join(FLAGS.out, "results.csv")
  rows = read_rows(csv_path)
  fixed_rows = read_rows(FLAGS.fixed_results) if FLAGS.fixed_results else None
  write_report = lambda: report(rows, os.path.join(FLAGS.out, "RESULTS.md"), fixed_rows,
                                FLAGS.fixed_results or "")
  for k in (int(s) for s in FLAGS.steps):
    for variant in FLAGS.variants:
      if any((r["variant"], int(r["num_steps"])) == (variant, k) for r in rows):
        continue
      logging.info("ablation: %s at K=%d (%s)", variant, k, jax.default_backend())
      rows.append(run_row(variant, k, workdir=FLAGS.workdir, out=FLAGS.out,
                          num_samples=FLAGS.num_samples, eval_seeds=FLAGS.eval_seeds))
      write_rows(csv_path, rows)
      write_report()
  write_report()


if __name__ == "__main__":
  define_flags()
  app.run(main)
