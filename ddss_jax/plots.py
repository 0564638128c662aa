"""Pictures of samples, written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
  fig.savefig(path, dpi=110)
  plt.close(fig)
