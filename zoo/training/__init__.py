"""Optimizer, the shared train step and the training loop."""

from zoo.training.loop import Diverged, evaluate, train
from zoo.training.step import TrainState, Trainer, create, eval_step, jit_steps, train_step

__all__ = ["Diverged", "TrainState", "Trainer", "create", "eval_step", "evaluate", "jit_steps",
           "train", "train_step"]
