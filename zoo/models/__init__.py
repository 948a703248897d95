"""Model families; importing this package registers every block kind."""

from zoo.models import transformer  # noqa: F401  (registers "dense")
from zoo.models import frozen  # noqa: F401  (registers "frozen_mlp")
from zoo.models import recurrent  # noqa: F401  (registers stacks "ladder", "staircase")
from zoo.models import structured  # noqa: F401  (registers "fastfood", "block_hadamard")
from zoo.models import mod  # noqa: F401  (registers "mod")
from zoo.models import moe  # noqa: F401  (registers "moe")
from zoo.models import mode  # noqa: F401  (registers "mode_staged")
from zoo.models.transformer import Decoder, aux_loss

__all__ = ["Decoder", "aux_loss"]
