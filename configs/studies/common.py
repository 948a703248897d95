"""Settings shared by the seed studies: the CPU scale (about 30 minutes each on a 2-core
machine) and the Table-1 scale of Chatelain et al. 2021 (configs/dense.py) on accelerators."""

from zoo.studies.spec import Size

# Small vocabulary so that non-embedding parameters are a real share of these tiny models.
CPU_SHARED = {"batch_size": 8, "seq_len": 128, "data.vocab_size": 2048, "eval_tokens": 32_768,
              "log_every": 10, "checkpoint_every": 200}
TABLE1_SHARED = {"checkpoint_every": 2000}  # eval_tokens: the Table-1 presets' 1M
SCALES = ("cpu", "table1")


def widths(*ds: int, heads: int = 4, layers: int | None = None) -> tuple[Size, ...]:
  """Sizes that differ by width (and optionally set the depth)."""
  extra = {"model.num_layers": layers} if layers else {}
  return tuple(Size(f"d{d}", {"model.d_model": d, "model.num_heads": heads, **extra})
               for d in ds)


def presets(*names: str) -> tuple[Size, ...]:
  """Sizes that are preset names (variants say `configs/<family>.py:{size}`)."""
  return tuple(Size(n) for n in names)


def check_scale(study: str, scale: str) -> None:
  if scale not in SCALES:
    raise ValueError(f"configs/studies/{study}.py:{scale}: unknown scale; allowed {list(SCALES)}")
