"""What a compiled program's collectives move, read from its HLO text.

XLA's `compiled.as_text()` names every collective with its result shape, e.g.

    %all-to-all.3 = bf16[2,8,40,256]{3,2,1,0} all-to-all(%fusion.7), replica_groups=...
    %ag-done = f32[64,512]{1,0} all-gather-done(%ag-start)

Asynchronous pairs (`*-start` / `*-done`) are counted once, at `-done`. The bytes of an op
are those of its result on one chip (for an all-gather the gathered array, for a
reduce-scatter the kept piece). An op inside a loop body (a scanned layer stack) appears
once in the text, so compile with unrolled layers to count a whole step. No maintained
parser of HLO text exists in JAX's public API; these few regular expressions are enough for
the result shapes.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "ragged-all-to-all",
         "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4,
          "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")
_OP = re.compile(r"=\s*(\(.*?\)|\w+\[[\d,]*\](?:\{[^}]*\})?)\s+(" + "|".join(
    re.escape(k) for k in sorted(KINDS, key=len, reverse=True)) + r")(-done|-start)?\(")
_CUSTOM = re.compile(r"custom_call_target=\"([^\"]+)\"")


@dataclasses.dataclass(frozen=True)
class Collective:
  kind: str
  shapes: tuple[tuple[int, ...], ...]  # of the result (several for a tuple result)
  bytes: int


def _arrays(text: str) -> list[tuple[str, tuple[int, ...]]]:
  return [(dtype, tuple(int(d) for d in dims.split(",") if d))
          for dtype, dims in _ARRAY.findall(text) if dtype in _BYTES]


def collectives(hlo_text: str) -> list[Collective]:
  """Every collective op of the program, once each."""
  found = []
  for line in hlo_text.splitlines():
    m = _OP.search(line)
    if not m or m.group(3) == "-start":
      continue
    arrays = _arrays(m.group(1))
    found.append(Collective(m.group(2), tuple(s for _, s in arrays),
                            sum(_BYTES[t] * math.prod(s) for t, s in arrays)))
  return found


def bytes_by_kind(hlo_text: str) -> dict[str, int]:
  """Result bytes per chip of each kind of collective, summed over the program."""
  total = collections.Counter({k: 0 for k in KINDS})
  for c in collectives(hlo_text):
    total[c.kind] += c.bytes
  return dict(total)


def gathers_of(hlo_text: str, shapes: list[tuple[int, ...]]) -> list[Collective]:
  """The all-gathers whose result is one of `shapes` (e.g. whole [B, L, D] activations)."""
  want = {tuple(s) for s in shapes}
  return [c for c in collectives(hlo_text)
          if c.kind == "all-gather" and any(s in want for s in c.shapes)]


def custom_calls(hlo_text: str) -> collections.Counter:
  """Custom-call targets and how often each appears (Mosaic kernels: "tpu_custom_call")."""
  return collections.Counter(_CUSTOM.findall(hlo_text))
