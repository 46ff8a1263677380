"""Image classification: the ViT on image batches, cross-entropy and accuracy."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab.data.images import ImageDataConfig, image_eval_batches, image_train_dataset
from jaxlab.nn.vit import ViT, ViTConfig, vit_flops_per_token, vit_param_counts
from jaxlab.tasks.base import Task


def softmax_cross_entropy(logits_BxK, labels_B):
    """Mean cross-entropy (nats) of integer labels, in float32."""
    logits = logits_BxK.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    return jnp.mean(lse - jnp.take_along_axis(logits, labels_B[:, None], axis=-1)[:, 0])


@dataclasses.dataclass(frozen=True)
class ImageClassificationTask(Task):
    """``model`` (a ViT) trained on ``data``.

    Batches: ``{"images": (B, H, W, C) float32, "labels": (B,) int32}``; loss: mean
    cross-entropy; metric: ``accuracy`` (top-1, a fraction).
    """

    model: ViTConfig = dataclasses.field(default_factory=ViTConfig)
    data: ImageDataConfig = dataclasses.field(default_factory=ImageDataConfig)
    name = "image_classification"

    @property
    def tokens_per_example(self) -> int:
        return self.model.seq_len

    def make_model(self, seed: int) -> ViT:
        return ViT(self.model, rngs=nnx.Rngs(params=seed))

    def loss_and_metrics(self, model, batch):
        logits = model(batch["images"])
        accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32))
        return softmax_cross_entropy(logits, batch["labels"]), {"accuracy": accuracy}

    def train_dataset(self, batch_size, seed, process_index=0, process_count=1):
        return image_train_dataset(self.data, batch_size, seed, process_index, process_count)

    def eval_batches(self, batch_size, num_batches):
        return image_eval_batches(self.data, batch_size, num_batches)

    def param_counts(self):
        return vit_param_counts(self.model)

    def flops_per_token(self):
        return vit_flops_per_token(self.model)

    def check(self, batch_size):
        images, labels = self.data.arrays("train")
        m = self.model
        if images.shape[1:] != (m.image_size, m.image_size, m.channels):
            raise ValueError(
                f"images of shape {images.shape[1:]} but ViTConfig expects "
                f"({m.image_size}, {m.image_size}, {m.channels}); set ViTConfig.image_size "
                "and ViTConfig.channels")
        top = int(np.max(labels))
        if top >= m.num_classes:
            raise ValueError(f"the training labels go up to {top} but ViTConfig.num_classes "
                             f"is {m.num_classes}")
        if len(labels) < batch_size:
            raise ValueError(f"{len(labels)} training images cannot fill one batch of "
                             f"{batch_size}")

    def summary(self):
        return {"task": self.name, "model": dataclasses.asdict(self.model),
                "data": dataclasses.asdict(self.data)}
