"""Typed, frozen configuration built from an ml_collections ConfigDict; all validation.

`from_configdict` (parse.py) turns the ConfigDict of a `configs/*.py` file into nested frozen
dataclasses (schema.py; each family's option group is its own dataclass, registered in
zoo/registry.py), and `validate` (checks.py) checks every value against the devices that
exist, before anything is compiled or written. A bad value raises `ConfigError`, whose
message is one line naming the field, the value and what is allowed.
"""

from zoo.config.checks import one_of, positive, validate, validate_data, validate_mesh, validate_model
from zoo.config.errors import ConfigError
from zoo.config.parse import defaults, from_configdict, from_saved, to_dict
from zoo.config.schema import (ACTIVATIONS, DATA_SOURCES, DTYPES, NORMS, OPTIMIZERS,
                               REMAT_POLICIES, SCHEDULES, Config, DataConfig, MeshConfig,
                               ModelConfig, OptimizerConfig)

__all__ = [
    "ACTIVATIONS", "DATA_SOURCES", "DTYPES", "NORMS", "OPTIMIZERS", "REMAT_POLICIES",
    "SCHEDULES", "Config", "ConfigError", "DataConfig", "MeshConfig", "ModelConfig",
    "OptimizerConfig", "defaults", "from_configdict", "from_saved", "one_of", "positive",
    "to_dict", "validate", "validate_data", "validate_mesh", "validate_model",
]
