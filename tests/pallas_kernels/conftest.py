"""Fixtures for the kernel tests: a race check around every test, meshes, interpret params.

tests/conftest.py already forces the CPU platform with 8 devices before JAX starts.

Race detection: in jax 0.11.2 TPU interpret mode *reports* a race (prints "RACE DETECTED" and
sets ``races.races_found`` on a state object that each kernel launch replaces) instead of
raising. So the state class is swapped for one that records every race, and the test fails
if any kernel it ran recorded one. ``test_race_detector_reports_a_real_race`` checks that this
catches a deliberate race.
"""

from __future__ import annotations

import jax
import pytest
from jax._src.pallas.mosaic.interpret import interpret_pallas_call as _ipc
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels import _common

_RACES: list[str] = []


class _RecordingRaceState(_ipc.RaceDetectionState):

  def __setattr__(self, name, value):
    if name == "races_found" and value:
      _RACES.append("race")
    super().__setattr__(name, value)


@pytest.fixture(autouse=True)
def races(monkeypatch, capfd):
  """Fails the test if TPU interpret mode saw a data race; yields the list of races."""
  monkeypatch.setattr(_ipc, "RaceDetectionState", _RecordingRaceState)
  _RACES.clear()
  yield _RACES
  out, _ = capfd.readouterr()
  pltpu.reset_tpu_interpret_mode_state()
  assert not _RACES and "RACE DETECTED" not in out, f"data race detected:\n{out[-3000:]}"


@pytest.fixture
def two_cores():
  """Interpret with two cores per device, so 'parallel' grid axes are split as on megacore."""
  params = pltpu.InterpretParams(detect_races=True, num_cores_or_threads=2,
                                 vector_clock_size=_common.VECTOR_CLOCK_SIZE)
  with _common.interpret_params(params):
    yield


@pytest.fixture
def mesh8():
  assert len(jax.devices()) == 8, "tests/conftest.py should give 8 CPU devices"
  return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
