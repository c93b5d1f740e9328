"""The MLM head of a Hugging Face masked LM, found so that it can run at the mask positions only."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import PreTrainedModel

HeadFn = Callable[[torch.Tensor], torch.Tensor]


def mlm_head(model: PreTrainedModel) -> HeadFn | None:
    """The module that turns hidden states into vocabulary logits, so it can run at mask positions only.

    Most HF masked LMs hold exactly two children, the encoder and the head (BERT ``cls``, RoBERTa ``lm_head``,
    ALBERT ``predictions``); DistilBERT spells its head out in four modules. Anything else returns None and
    the engine uses full logits (``warm_up`` double-checks whichever is chosen)."""
    if model.config.model_type == "distilbert":
        m = model
        return lambda h: m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(h))))
    base = model.base_model
    children = [
        child
        for child in model.children()
        if child is not base and not isinstance(child, nn.modules.loss._Loss) and any(True for _ in child.parameters())
    ]
    return children[0] if len(children) == 1 else None
