"""Optimizer, the shared train step, the training loop, and restoring a run."""

from zoo.training.loop import Diverged, train
from zoo.training.step import TrainState, Trainer, create, eval_step, jit_steps, train_step

__all__ = ["Diverged", "TrainState", "Trainer", "create", "eval_step", "jit_steps", "train",
           "train_step"]
