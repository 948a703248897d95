"""Tests run on the CPU with 8 fake devices (set before JAX initialises its backend)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
