"""The zoo: language-model architectures that separate parameter count from compute.

Axis letters, used in tensor names (`x_BLD`) and docstrings the same way in every file:

  B batch            L length (queries)     S key length, or a source's batch
  D model width      H heads                K head size
  F MLP hidden       V vocabulary           E experts
  C capacity (tokens a routed block or an expert keeps)
  R routes per token (the experts a token is sent to: top-k)
  G granularity, or groups of a grouped matmul
  T tokens with the leading axes flattened (one routing group)
  M sorted rows (T x R)   I input (contracted) width
  N a count the module names: output rows or columns of a kernel, blocks of a structured matrix
  O output width     P priority order (rank, token)

Layers: zoo.registry (families' registry) <- zoo.config <- zoo.models (shared parts, the
backbone) <- zoo.families (one module per family) <- accounting, training, evaluation <-
train.py, eval.py. pallas_kernels depends on nothing here.
"""
