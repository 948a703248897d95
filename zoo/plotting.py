"""A dependency-free PNG writer (matplotlib is optional), for images such as routing maps."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np


def _chunk(tag: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + tag + data
          + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def png_bytes(image_HWC: np.ndarray) -> bytes:
  """An 8-bit RGB (C=3) or grey (2-D) image as PNG bytes (filter 0 on every row)."""
  image = np.asarray(image_HWC, np.uint8)
  if image.ndim == 2:
    color_type = 0
  elif image.ndim == 3 and image.shape[2] == 3:
    color_type = 2
  else:
    raise ValueError(f"expected [H, W] or [H, W, 3] uint8, got {image.shape}")
  height, width = image.shape[:2]
  rows = image.reshape(height, -1)
  raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
  header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
          + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))


def write_png(path: str, image_HWC: np.ndarray) -> None:
  with open(path + ".tmp", "wb") as f:
    f.write(png_bytes(image_HWC))
  os.replace(path + ".tmp", path)
