"""Typed, frozen configuration built from an ml_collections ConfigDict; all validation.

`from_configdict` (parse.py) turns the ConfigDict of a `configs/*.py` file into nested frozen
dataclasses (schema.py; the family groups in families.py), and `validate` (checks.py) checks
every value against the devices that exist, before anything is compiled or written. A bad
value raises `ConfigError`, whose message is one line naming the field, the value and what
is allowed.
"""

from zoo.config.checks import validate, validate_data, validate_mesh, validate_model
from zoo.config.errors import ConfigError
from zoo.config.families import (DopedConfig, LadderConfig, ModConfig, MoeConfig,
                                 StaircaseConfig, StructuredConfig)
from zoo.config.parse import from_configdict
from zoo.config.schema import (ACTIVATIONS, DATA_SOURCES, DTYPES, HASH_KINDS, KERNEL_BACKENDS,
                               MOD_DECODE, MOD_ROUTING, MOE_ROUTERS, NORMS, OPTIMIZERS,
                               REMAT_POLICIES, SCHEDULES, Config, DataConfig, MeshConfig,
                               ModelConfig, OptimizerConfig)

__all__ = [
    "ACTIVATIONS", "DATA_SOURCES", "DTYPES", "HASH_KINDS", "KERNEL_BACKENDS", "MOD_DECODE",
    "MOD_ROUTING", "MOE_ROUTERS", "NORMS", "OPTIMIZERS", "REMAT_POLICIES", "SCHEDULES",
    "Config", "ConfigError", "DataConfig", "DopedConfig", "LadderConfig", "MeshConfig",
    "ModConfig", "ModelConfig", "MoeConfig", "OptimizerConfig", "StaircaseConfig",
    "StructuredConfig", "from_configdict", "validate", "validate_data", "validate_mesh",
    "validate_model",
]
