"""RESULTS.md and weights.png of the guidance study, from screen.csv, finalists.csv and the
learned samplers (python -m experiments.guidance.run --parts=report)."""

from __future__ import annotations

import csv
import os

import numpy as np
from scipy import stats

from ddss_jax import samplers
from ddss_jax.util import files

LEARNED = "ggdm+pred+time, learned w"  # the learned sampler with learned weights
# The learned samplers by their guidance rule (samplers/guided_<rule>_K<k>.json).
LEARNED_NAMES = {"fixed": "ggdm+pred+time, fixed w", "learned": LEARNED}
SCREEN_SEED = 1234  # the screen's evaluation seed, which the sampler files record
FIXED_ONLY = ("ddim", "ddpm")
FAMILIES = ("ddim", "ddpm", "dpm-solver++2m", "unipc", "ipndm")
FINALIST_SEEDS = 5  # the study's paired evaluation seeds (run.py's --finalist_seeds default)


def read(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, newline="", encoding="utf-8") as f:
    return [{k: (v if k in ("sampler", "stride", "interval") else float(v)) for k, v in
             row.items()} for row in csv.DictReader(f)]


def read_loss_choice(out: str) -> list[dict]:
  path = os.path.join(out, "loss_choice.csv")
  if not os.path.exists(path):
    return []
  with open(path, newline="", encoding="utf-8") as f:
    return [{k: (v == "True" if k == "shuffled_labels" else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)]


def setting(row: dict) -> str:
  name = row["sampler"]
  where = "" if row["interval"] == "-" else f" in sigma {row['interval']}"
  return f"{name} ({row['stride']}), w = {row['weight']:g}{where}"


# Shares over the 1000 samples (recall: over the 1000 held-out digits). Samples equal to float
# rounding give an FID equal to 1e-4 and shares equal to one sample: a sample near the
# classifier's confidence threshold or a k-NN radius may fall on the other side.
SHARES = ("class_accuracy", "confident_correct_share", "precision", "recall")
ONE_SAMPLE = 1.5e-3  # a share's step at 1000 samples (run.py's --num_samples), with slack


def fixed_twin(rows: list[dict], learned_row: dict) -> dict | None:
  """The fixed row of `rows` (same K and seed) whose samples `learned_row`'s sampler draws, to
  float rounding (FID within 1e-4 relative, every share within one sample), or None: a learned
  sampler that kept its start is the fixed sampler it started from."""
  for r in rows:
    if (r["sampler"] in FAMILIES and r["num_steps"] == learned_row["num_steps"]
        and r["seed"] == learned_row["seed"]
        and abs(r["fid"] - learned_row["fid"]) <= 1e-4 * learned_row["fid"]
        and all(abs(r[c] - learned_row[c]) <= ONE_SAMPLE for c in SHARES)):
      return r
  return None


def screen_section(rows: list[dict], num_steps: int) -> list[str]:
  here = [r for r in rows if int(r["num_steps"]) == num_steps]
  if not here:
    return []
  lines = [f"### K = {num_steps}: the screen (evaluation seed {SCREEN_SEED})", ""]
  learned_rows = {r["sampler"] for r in here} & set(LEARNED_NAMES.values())
  if len(learned_rows) < len(LEARNED_NAMES):  # the learn part runs after the whole grid
    lines += [f"In progress: {len(here)} rows so far, the learned samplers not yet; the best "
              "settings may still change.", ""]
  lines += ["The best setting of each fixed family and the learned samplers; every row is in "
            "screen.csv.", "",
           "| sampler | FID | class-conditional FID | class accuracy | confident and correct |",
           "|---|---|---|---|---|"]
  best = {}
  for r in here:
    name = r["sampler"]
    if name not in FAMILIES:  # a learned sampler: its own row
      best[setting(r)] = r
    elif name not in best or r["fid"] < best[name]["fid"]:
      best[name] = r
  for r in sorted(best.values(), key=lambda r: r["fid"]):
    lines.append(f"| {setting(r)} | {r['fid']:.3f} | {r['class_fid']:.2f} | "
                 f"{r['class_accuracy']:.3f} +- {r['class_accuracy_std']:.3f} | "
                 f"{r['confident_correct_share']:.3f} |")
  fixed = [r for r in here if r["sampler"] in FIXED_ONLY]
  learned = [r for r in here if r["sampler"] == LEARNED]
  for r in here:
    twin = None if r["sampler"] in FAMILIES else fixed_twin(here, r)
    if twin is not None:
      lines += ["", f"{r['sampler']} draws what the fixed {setting(twin)} draws (FID equal to "
                "1e-4, every share within one sample): DDSS kept its start."]
  if fixed and learned:
    ratio = learned[0]["fid"] / min(r["fid"] for r in fixed)
    lines += ["", f"FID of the learned sampler with learned weights over the best DDIM or "
              f"DDPM setting at any w: {ratio:.2f} (target at K = 5: at most 0.5)."]
  return lines + [""]


def pooled_binomial_std(rows: list[dict]) -> float:
  """The binomial std of the class accuracy pooled over rows of equal sample counts (each
  row's count is p (1 - p) / std^2)."""
  p = float(np.mean([r["class_accuracy"] for r in rows]))
  counts = [r["class_accuracy"] * (1 - r["class_accuracy"]) / r["class_accuracy_std"] ** 2
            for r in rows if r["class_accuracy_std"] > 0]
  n = len(rows) * (float(np.mean(counts)) if counts else 1000.0)
  return float(np.sqrt(p * (1 - p) / n))


def finalists_section(rows: list[dict], num_steps: int, *, twin: dict | None = None) -> list[str]:
  """The paired verdict at K; twin: the fixed screen row the learned sampler with learned weights
  draws the samples of (fixed_twin), if any."""
  here = [r for r in rows if int(r["num_steps"]) == num_steps]
  by_setting = {}
  for r in here:
    by_setting.setdefault(setting(r), {})[int(r["seed"])] = r
  # The seeds at which every setting has its row: a seed still running is left out.
  all_seeds = {int(r["seed"]) for r in here}
  seeds = sorted(s for s in all_seeds if all(s in v for v in by_setting.values()))
  mine = [k for k in by_setting if k.startswith(LEARNED)]
  if len(seeds) < 2 or not mine:
    return []
  ours = by_setting[mine[0]]
  lines = [f"### K = {num_steps}: the finalists on {len(seeds)} evaluation seeds (paired)", ""]
  planned = max(FINALIST_SEEDS, len(all_seeds))
  in_progress = len(seeds) < planned
  if in_progress:
    lines += [f"In progress: {len(seeds)} of the study's {planned} seeds so far; the verdict "
              "below is provisional.", ""]
  lines += ["Mean over the seeds; the difference is the learned sampler with learned weights "
            "minus the row, seed by seed, with its standard error; class accuracy pooled over "
            "the seeds with its binomial std.", "",
            "| sampler | mean FID | FID difference (learned weights - row) | class accuracy |",
            "|---|---|---|---|"]
  verdicts = []
  for name, per_seed in sorted(by_setting.items(), key=lambda kv: np.mean(
      [kv[1][s]["fid"] for s in seeds])):
    fids = np.array([per_seed[s]["fid"] for s in seeds])
    accuracy = float(np.mean([per_seed[s]["class_accuracy"] for s in seeds]))
    accuracy_std = pooled_binomial_std([per_seed[s] for s in seeds])
    if name == mine[0]:
      difference = "-"
    else:
      diff = np.array([ours[s]["fid"] for s in seeds]) - fids
      se = float(np.std(diff, ddof=1) / np.sqrt(len(diff)))
      difference = f"{diff.mean():+.4f} +- {se:.4f}"
      if per_seed[seeds[0]]["sampler"] in FAMILIES:
        ours_accuracy = float(np.mean([ours[s]["class_accuracy"] for s in seeds]))
        verdicts.append((name, diff.mean() < -2 * se,
                         ours_accuracy >= accuracy - 2 * accuracy_std))
    lines.append(f"| {name} | {fids.mean():.3f} | {difference} | {accuracy:.3f} +- "
                 f"{accuracy_std:.3f} |")
  missed = [f"{name} ({'FID' if not fid else 'class accuracy'})"
            for name, fid, acc in verdicts if not (fid and acc)]
  fixed_only = [np.mean([per_seed[s]["fid"] for s in seeds]) for per_seed in by_setting.values()
                if per_seed[seeds[0]]["sampler"] in FIXED_ONLY]
  if fixed_only:
    ratio = np.mean([ours[s]["fid"] for s in seeds]) / min(fixed_only)
    lines += ["", f"Mean FID of the learned sampler with learned weights over the best DDIM or "
              f"DDPM finalist's, on these seeds: {ratio:.2f}."]
  lines += ["", "Target (a lower FID than every fixed finalist by more than twice the standard "
            "error, a class accuracy lower by at most two binomial stds): "
            + (f"met at K = {num_steps}" if not missed else
               f"missed at K = {num_steps}, against " + "; ".join(missed))
            + (" so far" if in_progress else "")
            + ("" if twin is None else f" (the learned sampler is its start, the fixed "
               f"{setting(twin)}, which DDSS kept)") + ".", ""]
  return lines


def weights_figure(out: str) -> str | None:
  """weights.png: each learned sampler's per-step guidance weights against the step's sigma."""
  paths = learned_weight_files(out)
  if not paths:
    return None
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for name in paths:  # each learned sampler's file
    sampler, params = samplers.load(name)
    coeffs = sampler.coefficients(params)
    sigma = np.exp(-0.5 * np.asarray(sampler.schedule.logsnr(coeffs.t)))
    ax.plot(sigma, np.asarray(coeffs.w), "o-", label=f"K = {sampler.num_steps}")
  start = sampler.guidance.weight
  ax.axhline(start, color="gray", lw=0.8, ls="--", label=f"initial w = {start:g}")
  low, high = ax.get_ylim()  # at least +-0.5 around the start, so that small moves look small
  ax.set_ylim(min(low, start - 0.5), max(high, start + 0.5))
  ax.set_xscale("log")
  ax.set_xlabel("sigma = s / a of the step")
  ax.set_ylabel("learned guidance weight w")
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(out, "weights.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


LOSSES = ("joined", "per_class", "features_only")


def loss_choice_section(rows: list[dict]) -> list[str]:
  """The loss choice (loss_choice.csv): each loss's batch mean and std per sampler, its rank
  correlation with the held-out class-conditional FID, and how far shuffled labels move it."""
  if not rows:
    return []
  lines = ["## The loss of a conditional sampler (loss_choice.csv)", "",
           "Guided DDIM at K = 5 (quadratic stride); each loss over batches of 64 samples, drawn "
           "as the DDSS loss draws them, against 64 real training digits (mean +- std over the "
           "batches); the held-out columns from 1000 samples. The rule: NOTES.md.", "",
           "| w | labels | joined KID | KID within classes | KID of features only | held-out FID "
           "| held-out class-conditional FID | class accuracy |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    cells = " | ".join(f"{r[f'{n}_mean']:.4f} +- {r[f'{n}_std']:.4f}" for n in LOSSES)
    lines.append(f"| {r['weight']:g} | {'shuffled' if r['shuffled_labels'] else 'own'} | "
                 f"{cells} | {r['fid']:.3f} | {r['class_fid']:.2f} | {r['class_accuracy']:.3f} |")
  own = [r for r in rows if not r["shuffled_labels"]]
  wrong = [r for r in rows if r["shuffled_labels"]][0]
  same_w = [r for r in own if r["weight"] == wrong["weight"]][0]
  lines.append("")
  labels = dict(zip(LOSSES, ("joined KID", "KID within classes", "KID of features only")))
  scores = {}
  for name in LOSSES:
    rho = stats.spearmanr([r[f"{name}_mean"] for r in rows],
                          [r["class_fid"] for r in rows]).statistic
    gap = (wrong[f"{name}_mean"] - same_w[f"{name}_mean"]) / same_w[f"{name}_std"]
    scores[name] = (round(float(rho), 2), round(float(gap), 1))
    lines.append(f"- {labels[name]}: Spearman rho with the held-out class-conditional FID "
                 f"{rho:.2f}; shuffled labels raise it by {gap:.1f} batch stds.")
  joined, within = scores["joined"], scores["per_class"]
  kept = "per_class" if within > joined else "joined"  # rho first, then the gap; ties: joined
  setting_name = "within_classes" if kept == "per_class" else "joined"
  return lines + ["", f"Kept by the rule of NOTES.md: {labels[kept]} "
                  f"(loss.conditional = \"{setting_name}\").", ""]


def learned_weight_files(out: str) -> list[str]:
  folder = os.path.join(out, "samplers")
  if not os.path.isdir(folder):
    return []
  names = [p for p in os.listdir(folder) if p.startswith("guided_learned_K")]
  return [os.path.join(folder, p) for p in sorted(names, key=lambda p: int(p[16:-5]))]


def results_text(out: str) -> str:
  """RESULTS.md as the committed rows in `out` make it."""
  screen = read(os.path.join(out, "screen.csv"))
  finalists = read(os.path.join(out, "finalists.csv"))
  steps = sorted({int(r["num_steps"]) for r in screen})
  lines = ["# Guidance at few steps: fixed samplers and weights against learned ones", "",
           "<!-- generated by `python -m experiments.guidance.run --parts=report`; do not edit "
           "-->", "",
           "The class-conditional MNIST UNet, samples drawn for the 1000 held-out digits' labels "
           "(1000 samples a row), FID and class-conditional FID in the MNIST classifier's "
           "features against the held-out digits, class accuracy: the classifier's label is the "
           "requested one. w is diffusers' guidance_scale (1: the conditional model alone). How "
           "it was run: NOTES.md.", ""]
  lines += loss_choice_section(read_loss_choice(out))
  for k in steps:
    learned = [r for r in screen if int(r["num_steps"]) == k and r["sampler"] == LEARNED]
    twin = fixed_twin(screen, learned[0]) if learned else None
    lines += screen_section(screen, k) + finalists_section(finalists, k, twin=twin)
  if learned_weight_files(out):
    lines += ["![learned guidance weights](weights.png)", ""]
  return "\n".join(lines)


def write(out: str) -> None:
  """RESULTS.md and weights.png in `out`."""
  weights_figure(out)
  with files.atomic_write(os.path.join(out, "RESULTS.md")) as f:
    f.write(results_text(out))
