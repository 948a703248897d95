"""The one exception a bad config value raises."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
  """A config value that cannot be used; the message names field, value and allowed."""

  def __init__(self, field: str, value: Any, allowed: str):
    self.field, self.value, self.allowed = field, value, allowed
    super().__init__(f"config.{field}={value!r} is invalid: allowed {allowed}")
