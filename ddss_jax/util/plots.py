"""Pictures of samples, written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ddss_jax.util import files  # noqa: E402


def save(fig, path: str, *, dpi: int = 110) -> None:
  """fig.savefig to `path` atomically, in the format its extension names; closes fig."""
  with files.atomic_write(path, "wb") as f:
    fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png", dpi=dpi)
  plt.close(fig)


def scatter_panels(panels: dict[str, np.ndarray], path: str, *, limit: float = 2.5) -> None:
  """One scatter plot of 2-D points [N, 2] per panel title, side by side, saved to `path`."""
  fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
  for ax, (title, points) in zip(axes[0], panels.items()):
    points = np.asarray(points)
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  save(fig, path)


def image_grids(panels: dict[str, np.ndarray], path: str, *, max_images: int = 64) -> None:
  """One square grid of the first images [N, H, W, C] in [-1, 1] per panel, side by side."""
  fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.9), squeeze=False)
  for ax, (title, images) in zip(axes[0], panels.items()):
    ax.imshow(grid(np.asarray(images)[:max_images]), cmap="gray", vmin=0.0, vmax=1.0)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
  fig.tight_layout()
  save(fig, path)


def grid(images: np.ndarray, *, pad: int = 1) -> np.ndarray:
  """[rows * (H + pad), cols * (W + pad)(, C)] tiling of images [N, H, W, C] in [-1, 1] ->
  [0, 1]."""
  num, height, width, channels = images.shape
  cols = int(np.ceil(np.sqrt(num)))
  rows = int(np.ceil(num / cols))
  canvas = np.ones((rows * (height + pad), cols * (width + pad), channels), np.float32)
  for i, image in enumerate(np.clip((images + 1) / 2, 0, 1)):
    r, c = divmod(i, cols)
    canvas[r * (height + pad):r * (height + pad) + height,
           c * (width + pad):c * (width + pad) + width] = image
  return canvas[..., 0] if channels == 1 else canvas


def training_curves(history: list[dict[str, float]], path: str) -> None:
  """The training loss and the validation metrics (val/*) against the step, one panel each,
  from metric lines {"step", "train/...", "val/...", ...}; saved to `path`."""
  names = sorted({k for line in history for k in line
                  if (k.startswith("val/") and k != "val/best_step")
                  or k in ("train/kid", "train/teacher")})
  if not names:
    return
  fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.0), squeeze=False)
  for ax, name in zip(axes[0], names):
    points = [(line["step"], line[name]) for line in history if name in line]
    ax.plot(*zip(*points), marker="." if name.startswith("val/") else None)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("DDSS step")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  save(fig, path)
