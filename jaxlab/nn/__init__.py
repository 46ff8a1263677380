"""Flax NNX modules: the transformer LM and its layers."""

from jaxlab.nn.accounting import count_params, flops_per_token, param_counts
from jaxlab.nn.config import ModelConfig
from jaxlab.nn.transformer import TransformerLM, cross_entropy

__all__ = ["ModelConfig", "TransformerLM", "cross_entropy", "param_counts", "flops_per_token",
           "count_params"]
