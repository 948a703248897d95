"""Config conversion and validation: one clear error naming field, value and allowed."""

import dataclasses

import pytest

from configs import base, dense
from zoo import config as config_lib
from zoo import registry
from zoo.config import ConfigError
from zoo.testing import tiny_config, tiny_model


def test_every_dense_preset_parses_and_validates():
  for size in dense.SIZES:
    cfg = config_lib.from_configdict(dense.get_config(size))
    config_lib.validate(dataclasses.replace(cfg), num_devices=1)
    assert cfg.model.vocab_size == cfg.data.vocab_size


def test_table1_presets_match_the_paper():
  for size, (layers, width, heads, lr) in dense.TABLE1.items():
    cfg = config_lib.from_configdict(dense.get_config(size))
    assert (cfg.model.num_layers, cfg.model.d_model, cfg.model.num_heads) == (layers, width, heads)
    assert cfg.optimizer.lr == lr and cfg.seq_len == 1024 and cfg.batch_size == 80
    assert cfg.optimizer.warmup_steps * 80 * 1024 == 409_600_000
    assert cfg.model.dropout == 0.1 and cfg.optimizer.weight_decay == 0.0
    assert cfg.optimizer.grad_clip == 1.0 and cfg.optimizer.schedule == "cosine"


def test_unknown_field_is_named():
  c = base.get_config()
  with c.unlocked():
    c.model.widht = 3  # a typo a user could make through a custom config
  with pytest.raises(ConfigError, match=r"config\.model\.widht"):
    config_lib.from_configdict(c)


def test_wrong_type_is_named():
  c = base.get_config().to_dict()  # ConfigDict itself would refuse the assignment
  c["steps"] = "many"
  with pytest.raises(ConfigError, match=r"config\.steps='many'.*integer"):
    config_lib.from_configdict(c)


@pytest.mark.parametrize("change, devices, field", [
    (dict(model=dict(num_heads=5)), 1, "model.num_heads"),
    (dict(model=dict(d_model=0)), 1, "model.d_model"),
    (dict(model=dict(pattern=("dense", "nope"))), 1, "model.pattern"),
    (dict(model=dict(activation="tanh")), 1, "model.activation"),
    (dict(steps=-3), 1, "steps"),
    (dict(batch_size=6, mesh=dict(data=-1)), 4, "batch_size"),
    (dict(mesh=dict(data=3)), 8, "mesh"),
    (dict(mesh=dict(data=-1, fsdp=-1)), 8, "mesh.fsdp"),
    (dict(data=dict(source="local_text", path="/no/such/file.txt")), 1, "data.path"),
    (dict(data=dict(source="web")), 1, "data.source"),
    (dict(optimizer=dict(schedule="step")), 1, "optimizer.schedule"),
    (dict(partition="auto"), 1, "partition"),
    (dict(batch_size=4, mesh=dict(data=1, expert=8)), 8, "batch_size"),  # batch over experts
])
def test_bad_values_name_the_field(change, devices, field):
  cfg = tiny_config()
  for group, values in change.items():
    if isinstance(values, dict):
      cfg = dataclasses.replace(cfg, **{group: dataclasses.replace(getattr(cfg, group), **values)})
    else:
      cfg = dataclasses.replace(cfg, **{group: values})
  with pytest.raises(ConfigError) as err:
    config_lib.validate(cfg, devices)
  assert err.value.field == field
  message = str(err.value)
  assert "\n" not in message and f"config.{field}=" in message and "allowed" in message


def test_mesh_fill():
  sizes = config_lib.validate_mesh(config_lib.MeshConfig(data=2, fsdp=-1, tensor=2), 8)
  assert sizes == {"data": 2, "fsdp": 2, "tensor": 2, "expert": 1}


def test_misspelled_field_suggests_the_nearest_name():
  c = base.get_config().to_dict()
  c["model"]["moe"]["num_expert"] = 16
  with pytest.raises(ConfigError, match=r"config\.model\.moe\.num_expert=.*'num_experts'"):
    config_lib.from_configdict(c)


@pytest.mark.parametrize("value", ["dense,mod", ("dense,mod",), ["dense", "mod"], "(dense,mod)"])
def test_a_pattern_can_be_typed_plainly(value):
  c = base.get_config().to_dict()
  c["model"]["pattern"] = value
  assert config_lib.from_configdict(c).model.pattern == ("dense", "mod")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_floats_are_refused(value):
  c = base.get_config().to_dict()
  c["optimizer"]["lr"] = value
  with pytest.raises(ConfigError, match=r"config\.optimizer\.lr=.*finite"):
    config_lib.from_configdict(c)


def test_defaults_are_written_once_in_the_dataclasses():
  """The ConfigDict presets start from is the typed config's defaults, every family's
  option group included, and parses back to them."""
  default = config_lib.Config()
  default = dataclasses.replace(default, model=dataclasses.replace(
      default.model, vocab_size=default.data.vocab_size))
  assert config_lib.from_configdict(base.get_config()) == default
  assert set(base.get_config().model) >= set(registry.option_groups())


def test_unknown_block_kind_lists_the_registered_ones():
  cfg = tiny_config(model=tiny_model(pattern=("dense", "moee")))
  with pytest.raises(ConfigError, match=r"config\.model\.pattern='moee'.*'moe'"):
    config_lib.validate(cfg, 1)


def test_experts_must_split_over_the_expert_axis():
  from zoo.families.mixture_of_experts import MoeConfig
  from zoo.families.mixture_of_depths import ModConfig
  from zoo.testing import tiny_model
  from zoo.config import MeshConfig
  cfg = tiny_config(model=tiny_model(pattern=("dense", "moe"), moe=MoeConfig(num_experts=6)),
                    mesh=MeshConfig(data=1, expert=4))
  with pytest.raises(ConfigError, match=r"config\.model\.moe\.num_experts=6.*mesh\.expert=4"):
    config_lib.validate(cfg, 4)
  cfg = tiny_config(model=tiny_model(pattern=("dense", "mod"), mod=ModConfig(backend="gpu")))
  with pytest.raises(ConfigError, match=r"config\.model\.mod\.backend='gpu'"):
    config_lib.validate(cfg, 1)
