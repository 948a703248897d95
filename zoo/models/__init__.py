"""Model families; importing this package registers every block kind."""

from zoo.models import transformer  # noqa: F401  (registers "dense")
from zoo.models.transformer import Decoder, aux_loss

__all__ = ["Decoder", "aux_loss"]
