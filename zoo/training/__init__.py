"""Optimizer, the shared train step, the training loop, and restoring a run."""

from zoo.training.loop import train
from zoo.training.step import TrainState, Trainer, create, eval_step, jit_steps, train_step

__all__ = ["TrainState", "Trainer", "create", "eval_step", "jit_steps", "train", "train_step"]
