"""The dense baseline: pre-norm rotary GPT blocks in the plain stack.

Radford et al. 2019 (GPT-2, pre-norm); rotary positions, Su et al. 2021 (arXiv:2104.09864).
Each layer is x <- x + Attn(Norm(x)), then x <- x + MLP(Norm(x)); the stack applies the
layers once. Forward FLOPs per token: 2 x (4 D H K + D F x matrices) + 4 L H K (attention
scores over the L x L square). The block and the stack live in zoo/models/transformer.py,
since other families reuse them; this module registers them.
"""

from zoo import registry
from zoo.models import flops
from zoo.models.transformer import DenseBlock, Stack

FAMILY = registry.register(registry.Family(
    name="dense",
    blocks=(registry.BlockKind("dense", DenseBlock, flops.dense_block_flops),),
    stacks=(registry.StackKind("plain", Stack, flops.plain_stack_flops),),
))
