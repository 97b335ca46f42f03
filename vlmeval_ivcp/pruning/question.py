"""The question of each prompt, for methods that measure relevance to it (CDPruner): its raw text, given by the
harness for the next prefill (`Pruner.set_question_texts`), and its tokens' embeddings in the LLM's input space.

The text is the benchmark's question alone (no chat template, no image placeholder), as the releases pass it to
their text encoders; the model's own tokenizer cuts it, without special tokens, and the model's input embedding
table embeds it, so it lives in the space of the projected visual tokens a before-LLM cut reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

# A tokenizer call as transformers' tokenizers take it: `tokenizer(text, add_special_tokens=False)["input_ids"]`.
Tokenizer = Callable[..., Any]


def check_question_texts(texts: Sequence[str], batch: int) -> list[str]:
    """The texts of a prefill of `batch` prompts, one string each.

    Raises:
        ValueError: not one string per prompt.
    """
    texts = list(texts)
    if len(texts) != batch or not all(isinstance(text, str) for text in texts):
        raise ValueError(
            f"set_question_texts needs one string per prompt of the batch ({batch}), got "
            f"{[type(text).__name__ for text in texts]}"
        )
    return texts


def question_embeddings(texts: list[str], tokenizer: Tokenizer, embedding: nn.Module) -> list[torch.Tensor]:
    """Each text's token embeddings `[Q, D]` (`Q = 0` for an empty text), on the embedding table's device.

    The text is tokenised alone: its first token may differ from the one the prompt holds (a tokenizer may merge a
    leading space or newline with it).
    """
    weight = embedding.weight
    out = []
    for text in texts:
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        out.append(embedding(ids.to(weight.device)) if ids.numel() else weight.new_zeros(0, weight.shape[1]))
    return out
