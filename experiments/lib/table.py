"""The results.csv schema every study writes and reads, the samplers' labels, and the best fixed
sampler at a K."""

from __future__ import annotations

import csv
import os

from ddss_jax.util import files
from experiments.lib.protocol import COLUMNS, FIXED, LEARNED, SEED2_COLUMNS, TEACHER_ROW

BASELINES = ("ddpm:linear", "ddpm:quadratic", "ddim:linear", "ddim:quadratic")
SOLVERS = ("dpm-solver++2m:linear", "dpm-solver++2m:logsnr", "dpm-solver++2m:quadratic",
           "unipc:linear", "unipc:logsnr", "unipc:quadratic", "ipndm:linear", "ipndm:logsnr",
           "ipndm:quadratic")
LABELS = {
    "ddpm:linear": "DDPM, linear stride", "ddpm:quadratic": "DDPM, quadratic stride",
    "ddim:linear": "DDIM, linear stride", "ddim:quadratic": "DDIM, quadratic stride",
    "dpm-solver++2m:linear": "DPM-Solver++(2M), time-uniform",
    "dpm-solver++2m:logsnr": "DPM-Solver++(2M), logSNR-uniform",
    "dpm-solver++2m:quadratic": "DPM-Solver++(2M), quadratic stride",
    "unipc:linear": "UniPC, time-uniform", "unipc:logsnr": "UniPC, logSNR-uniform",
    "unipc:quadratic": "UniPC, quadratic stride",
    "ipndm:linear": "iPNDM, time-uniform", "ipndm:logsnr": "iPNDM, logSNR-uniform",
    "ipndm:quadratic": "iPNDM, quadratic stride",
    "vars": "VARS (learned)", "ggdm": "GGDM (learned)", "ggdm+pred": "GGDM +PRED (learned)",
    "ggdm+time": "GGDM +TIME (learned)", "ggdm+pred+time": "GGDM +PRED +TIME (learned)",
    "dpm-solver++2m+time": "DPM-Solver++(2M) +TIME (learned)",
    "unipc+time": "UniPC +TIME (learned)",
}


def row_name(family: str, stride: str | None = None) -> str:
  """The results.csv sampler column: the family, with ":stride" for the fixed samplers."""
  return f"{family}:{stride}" if stride else family


def read_rows(path: str) -> list[dict]:
  """results.csv's rows, numbers as numbers; a second seed's cells None where empty or absent
  (files written before the second seed)."""
  if not os.path.exists(path):
    return []
  with open(path, newline="") as f:
    return [dict(row, num_steps=int(row["num_steps"]),
                 **{c: float(row[c]) for c in COLUMNS[3:]},
                 **{c: float(row[c]) if row.get(c) else None for c in SEED2_COLUMNS})
            for row in csv.DictReader(f)]


def write_rows(path: str, rows: list[dict]) -> None:
  """results.csv, atomically, in the paper's order: fixed samplers, then learned, by K."""
  order = ([row_name(f, s) for f, s in FIXED] + [row_name(*TEACHER_ROW[:2])]
           + [f for f, _, _ in LEARNED])
  rows = sorted(rows, key=lambda r: (order.index(r["sampler"]), r["loss"], r["num_steps"]))
  with files.atomic_write(path, newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS + SEED2_COLUMNS)
    writer.writeheader()
    for row in rows:
      cells = {c: row.get(c) for c in COLUMNS + SEED2_COLUMNS}
      writer.writerow({c: (f"{v:.6g}" if isinstance(v, float) else "" if v is None else v)
                       for c, v in cells.items()})


def label(sampler: str, loss: str) -> str:
  text = LABELS.get(sampler, sampler)
  return text.replace("(learned)", "(learned, teacher loss)") if loss == "teacher" else text


def index_rows(rows):
  return {(r["sampler"], r["loss"], r["num_steps"]): r for r in rows}


def best_fixed(rows: list[dict], num_steps: int, names=None) -> dict | None:
  """The row of the fixed sampler (loss "none") with the lowest first-seed FID at K = num_steps,
  among `names` where given; None where none ran at that K. The first such row on a tie."""
  at_k = [r for r in rows if r["loss"] == "none" and int(r["num_steps"]) == num_steps
          and (names is None or r["sampler"] in names)]
  return min(at_k, key=lambda r: float(r["fid"])) if at_k else None
