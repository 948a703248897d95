"""Shared model parts and the decoder backbone that every family (zoo/families) plugs into."""

from zoo.models.transformer import Decoder, aux_loss

__all__ = ["Decoder", "aux_loss"]
