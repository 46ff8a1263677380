"""Tasks: what a run trains (model, loss and metrics, data, parameter and FLOP counts).

``TrainConfig.task`` names one (``'lm'``, the default, or ``'image_classification'``) or is
a :class:`Task` (e.g. a gin reference ``@my_task()``). :func:`build_task` assembles the
named task from its gin-configured config objects at the entry point.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxlab.tasks.base import Task
from jaxlab.tasks.image_classification import ImageClassificationTask, softmax_cross_entropy
from jaxlab.tasks.language_model import LanguageModelTask


def _lm(seq_len: int) -> Task:
    from jaxlab.data import DataConfig
    from jaxlab.nn import ModelConfig

    return LanguageModelTask(ModelConfig(), DataConfig(), seq_len)


def _image_classification(seq_len: int) -> Task:
    del seq_len  # the ViT's sequence is its patches
    from jaxlab.data.images import ImageDataConfig
    from jaxlab.nn.vit import ViTConfig

    return ImageClassificationTask(ViTConfig(), ImageDataConfig())


# name -> builder(seq_len) reading the task's config objects from gin
TASKS: dict[str, Callable[[int], Task]] = {"lm": _lm, "image_classification": _image_classification}


def build_task(task, seq_len: int = 128) -> Task:
    """A :class:`Task` from ``TrainConfig.task``: a name in :data:`TASKS`, a Task, or a
    zero-argument callable returning one."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"TrainConfig.task={task!r}; valid: {sorted(TASKS)} or a Task")
        return TASKS[task](seq_len)
    if callable(task):
        out = task()
        if isinstance(out, Task):
            return out
    raise ValueError(f"TrainConfig.task={task!r}; valid: {sorted(TASKS)}, a Task, or a "
                     "callable returning a Task")


__all__ = ["TASKS", "ImageClassificationTask", "LanguageModelTask", "Task", "build_task",
           "softmax_cross_entropy"]
