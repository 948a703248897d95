"""Mixture-of-Depths-and-Experts (Raposo et al. 2024, section 4.3): staged and integrated.

arg = "<variant>_<size>": variant in staged, integrated; size in tiny, xxsmall, xsmall,
small, medium (configs/dense.py's Table 1 of Chatelain et al. 2021). Both start from the
Switch MoE of configs/moe.py (top-1, capacity factor 1.25, load-balance alpha 0.01, 8
experts at tiny and 64 at Table-1 sizes, every other layer). Run with, e.g.

  python train.py --config configs/mode.py:integrated_tiny --workdir /tmp/zoo/mode_int_tiny
  python train.py --config configs/mode.py:staged_tiny --workdir /tmp/zoo/mode_staged_tiny
  python eval.py --workdir /tmp/zoo/mode_staged_tiny --figures

* staged: pattern ("dense", "mode_staged"): MoD routing at capacity 12.5% (the paper's best
  MoD setting) around each MoE block, so 12.5% of the tokens run its attention and experts.
* integrated: pattern ("dense", "moe") with as many no-op experts as experts
  (`model.moe.noop_experts`): at balanced routing half the tokens take the residual path
  around the MLP, and each expert's capacity is set for L / (E + N) tokens. Attention runs on
  every token. For the 12.5% of the staged preset, --config.model.moe.noop_experts=56 at
  tiny (7 x 8).

The paper found integrated MoDE better than staged, and better than lowering the capacity
of a plain MoE so that full experts drop tokens (figure 7).
"""

import ml_collections

from configs import dense, moe

VARIANTS = ("staged", "integrated")
SIZES = dense.SIZES


def get_config(arg: str = "integrated_tiny") -> ml_collections.ConfigDict:
  variant, _, size = arg.rpartition("_")
  if variant not in VARIANTS or size not in SIZES:
    raise ValueError(f"configs/mode.py:{arg}: expected <variant>_<size> with variant in "
                     f"{list(VARIANTS)} and size in {list(SIZES)}")
  c = moe.get_config(f"switch_{size}")
  if variant == "staged":
    c.model.pattern = ("dense", "mode_staged")
  else:
    c.model.moe.noop_experts = c.model.moe.num_experts
  return c
