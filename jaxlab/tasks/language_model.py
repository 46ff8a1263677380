"""Language modelling: the transformer LM on token windows, next-token cross-entropy."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from jaxlab.data import DataConfig, eval_batches, train_dataset
from jaxlab.data.pipeline import check_vocab
from jaxlab.nn import ModelConfig, TransformerLM, cross_entropy, flops_per_token, param_counts
from jaxlab.optim.qk_clip import MAX_LOGITS
from jaxlab.tasks.base import BARE_LOSS_KEY, UPDATE_INPUTS_KEY, Task


@dataclasses.dataclass(frozen=True)
class LanguageModelTask(Task):
    """``model`` trained on ``seq_len``-token windows of ``data``.

    Batches: ``{"inputs": (B, T) int32, "targets": (B, T) int32}``; loss: mean next-token
    cross-entropy (nats per token), no extra metrics; a mixture-of-experts model adds
    ``moe_load_balance`` times its load-balancing loss (metrics ``ce_loss``,
    ``moe/load_loss``, ``moe/dropped_frac``). With ``report_max_logits`` (set by
    :meth:`reporting` for QK-clip) also ``attn/max_logit`` and, for the optimizer, the
    per-layer, per-head maxima ``attn_max_logits (L, H)``.
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    seq_len: int = 128
    report_max_logits: bool = False
    name = "lm"

    @property
    def tokens_per_example(self) -> int:
        return self.seq_len

    def make_model(self, seed: int) -> TransformerLM:
        return TransformerLM(self.model, rngs=nnx.Rngs(params=seed))

    def loss_and_metrics(self, model, batch):
        moe = self.model.moe_experts > 0
        if not (moe or self.report_max_logits):
            return cross_entropy(model(batch["inputs"]), batch["targets"]), {}
        logits, aux = model(batch["inputs"], with_aux=True, max_logits=self.report_max_logits)
        loss = cross_entropy(logits, batch["targets"])
        metrics = {}
        if moe:
            load = jnp.mean(aux["moe_load_loss"])
            metrics = {BARE_LOSS_KEY: loss, "moe/load_loss": load,
                       "moe/dropped_frac": jnp.mean(aux["moe_dropped_frac"])}
            loss = loss + self.model.moe_load_balance * load
        if self.report_max_logits:
            metrics["attn/max_logit"] = jnp.max(aux["max_logits"])
            metrics[UPDATE_INPUTS_KEY] = {MAX_LOGITS: aux["max_logits"]}
        return loss, metrics

    def reporting(self, inputs):
        unknown = [i for i in inputs if i != MAX_LOGITS]
        if unknown:
            raise ValueError(f"the language-model task cannot report {unknown}; it reports "
                             f"{MAX_LOGITS!r} (for QK-clip)")
        return dataclasses.replace(self, report_max_logits=True) if inputs else self

    def train_dataset(self, batch_size, seed, process_index=0, process_count=1):
        return train_dataset(self.data.tokens("train"), self.seq_len, batch_size, seed,
                             process_index, process_count)

    def eval_batches(self, batch_size, num_batches):
        return eval_batches(self.data.tokens("validation"), self.seq_len, batch_size,
                            num_batches)

    def param_counts(self):
        return param_counts(self.model)

    def flops_per_token(self):
        return flops_per_token(self.model, self.seq_len)

    def check(self, batch_size):
        if self.seq_len > self.model.max_seq_len:
            raise ValueError(
                f"TrainConfig.seq_len={self.seq_len} is longer than the model supports "
                f"(ModelConfig.max_seq_len={self.model.max_seq_len})")
        check_vocab(self.data.tokens("train"), self.model.vocab_size, "the training data")

    def with_block_sparse(self, block_size):
        if self.model.sparse_block_size is not None:
            return self
        return dataclasses.replace(
            self, model=dataclasses.replace(self.model, sparse_block_size=block_size))

    def summary(self):
        return {"task": self.name, "model": dataclasses.asdict(self.model)}
