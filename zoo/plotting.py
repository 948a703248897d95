"""Figures the library draws (matplotlib, Agg backend: no display needed), saved as PNG.

Each function returns the figure, so a notebook shows it and eval.py saves it; families call
these from their `figures` hook.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
from matplotlib import colors, patches  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PROCESSED, SKIPPED, EVERY_TOKEN, PADDING = "#5e3c99", "#ebe4f0", "#aaaaaa", "#ffffff"


def routing_map(grid_LT: np.ndarray, token_text: list[str], real_T: np.ndarray,
                path: str | None = None, *, title: str = "routing") -> plt.Figure:
  """Which tokens (x, their text below) each layer (y, layer 0 at the bottom) processed.

  grid_LT: 1 processed by a routed layer, 0 routed around it, nan a layer that processes
  every token. real_T: False for padding positions.
  """
  layers, tokens = grid_LT.shape
  codes = np.where(np.isnan(grid_LT), 2, grid_LT).astype(int)
  codes[:, ~np.asarray(real_T, bool)] = 3
  cmap = colors.ListedColormap([SKIPPED, PROCESSED, EVERY_TOKEN, PADDING])
  fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * tokens + 1.5), 0.35 * layers + 2.2))
  ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=3.5, origin="lower", aspect="auto",
            interpolation="nearest")
  ax.set_xticks(range(tokens))
  ax.set_xticklabels([repr(t)[1:-1] or " " for t in token_text], rotation=90, fontsize=7,
                     family="monospace")
  ax.set_yticks(range(layers))
  ax.set_ylabel("layer")
  ax.set_xlabel("token (validation text)")
  ax.set_title(title, pad=26)
  legend = [patches.Patch(color=PROCESSED, label="processed (routed layer)"),
            patches.Patch(color=SKIPPED, label="routed around"),
            patches.Patch(color=EVERY_TOKEN, label="layer processes every token")]
  ax.legend(handles=legend, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3,
            fontsize=8, frameon=False)
  fig.tight_layout()
  if path:
    fig.savefig(path, dpi=120)
    plt.close(fig)
  return fig


def expert_loads(steps: list[int], loads_SE: np.ndarray, path: str | None = None, *,
                 title: str = "expert load") -> plt.Figure:
  """Each expert's load over training (x: step, y: expert, colour: load / mean load, 1 =
  even), the histogram an MoE layer logs every log step."""
  loads_SE = np.asarray(loads_SE, np.float64)
  fig, ax = plt.subplots(figsize=(7.0, 0.25 * loads_SE.shape[1] + 2.0))
  image = ax.imshow(loads_SE.T, aspect="auto", origin="lower", cmap="viridis",
                    interpolation="nearest",
                    extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, loads_SE.shape[1] - 0.5))
  fig.colorbar(image, ax=ax, label="load / mean load (1 = balanced)")
  ax.set_xlabel("training step")
  ax.set_ylabel("expert")
  ax.set_title(title)
  fig.tight_layout()
  if path:
    fig.savefig(path, dpi=120)
    plt.close(fig)
  return fig
