"""The verdicts every study gives a learned row against the best fixed sampler: below it by more
than the evaluation seeds differ, the share of the gap to the model's own quality closed, recall
within two binomial stds, and below the best fixed sampler at 2K."""

from __future__ import annotations

import math


def seed_check(learned: dict, fixed: dict | None) -> tuple[str, str, str]:
  """(both seeds' FID of the learned row, the seed difference, the verdict) as table cells.

  The seed difference is the larger |FID(seed 1) - FID(seed 2)| of the learned row and the best
  fixed one; the learned sampler "beats it by more than the seed difference" when its FID is
  below the fixed sampler's by more than that on each seed. "-" without a second seed.
  """
  both = f"{learned['fid']:.3f} / " + ("-" if learned.get("fid_2") is None
                                         else f"{learned['fid_2']:.3f}")
  if fixed is None or learned.get("fid_2") is None or fixed.get("fid_2") is None:
    return both, "-", "-"
  spread = max(abs(learned["fid"] - learned["fid_2"]), abs(fixed["fid"] - fixed["fid_2"]))
  margin = min(fixed["fid"] - learned["fid"], fixed["fid_2"] - learned["fid_2"])
  return both, f"{spread:.3f}", "yes" if margin > spread else "no"


def beats_by_seed_difference(row: dict, fixed: dict | None) -> str:
  """"yes" where `row` (a results.csv row) is below the best fixed sampler by more than the seed
  difference on each seed (seed_check), "no", or "-" without a fixed row or a second seed."""
  def floats(r):
    return {"fid": float(r["fid"]), "fid_2": float(r["fid_2"]) if r.get("fid_2") else None}
  return seed_check(floats(row), fixed and floats(fixed))[2]


def targets(row: dict, fixed: dict | None, fixed_2k: dict | None, *, num_samples: int,
            full_quality_fid: float) -> dict[str, str]:
  """The targets as table cells for a held-out row {"fid", "fid_2", "recall"} against the best
  fixed sampler at K and at 2K (paper-tables rows; "-" where absent): below it by more
  than the seed difference on each seed; the share of the gap to full_quality_fid closed on
  each seed; recall no lower than the fixed sampler's by more than two binomial stds; below the
  best fixed sampler at 2K on each seed."""
  if fixed is None:
    return dict.fromkeys(("beats", "gap", "recall", "beats_2k"), "-")
  _, spread, beats = seed_check(row, fixed)
  margin = min(fixed["fid"] - row["fid"], fixed["fid_2"] - row["fid_2"])
  gaps = [(fixed[c] - row[c]) / (fixed[c] - full_quality_fid) for c in ("fid", "fid_2")]
  two_std = 2 * math.sqrt(fixed["recall"] * (1 - fixed["recall"]) / num_samples)
  below_2k = fixed_2k is not None and all(row[c] < fixed_2k[c] for c in ("fid", "fid_2"))
  return {"beats": f"{beats} ({margin:+.3f} vs {spread})",
          "gap": " / ".join(f"{100 * g:.0f}%" for g in gaps),
          "recall": (f"{'yes' if row['recall'] >= fixed['recall'] - two_std else 'no'} "
                     f"({row['recall']:.3f} vs {fixed['recall']:.3f} - {two_std:.3f})"),
          "beats_2k": "-" if fixed_2k is None else "yes" if below_2k else "no"}
