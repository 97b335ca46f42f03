"""`cdpruner`: conditional diversity by a determinantal point process (CDPruner, https://arxiv.org/abs/2506.10967).

CDPruner keeps the visual tokens that are both diverse and relevant to the instruction: a DPP kernel
`L = diag(r) S diag(r)` over the projected visual tokens (`S` = their cosine similarity, `r` = their relevance to the
instruction, min-max scaled), and the greedy MAP of that DPP, before the LLM. No attention map is read, so every
attention implementation works. Rule followed: the release's `LlavaMetaForCausalLM.encode_images`
(`llava/model/llava_arch.py`, Theia-4869/CDPruner); relevance as the OpenVINO GenAI port for models without a CLIP
text tower (docs/methods/cdpruner.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import PruneConfig, check_choice
from ..context import Selection, SelectionContext, sorted_keep
from ..registry import register_method

# The release divides by sqrt(d2[j]); a pick with no residual left (a duplicate, or more picks than the rank) would
# give NaN there, so its residual is floored at this value.
_MIN_RESIDUAL = 1e-12
# What relevance is measured against: the question's own tokens (the release passes the raw question to its text
# encoder), or every prompt token after the last image (question, answer-format line and chat-template tail).
INSTRUCTIONS = ("question", "prompt_tail")


@dataclass
class CDPrunerConfig(PruneConfig):
    """Settings of `cdpruner`: before the LLM, on the projected visual tokens."""

    scope: str = field(default="before_llm", metadata={"help": "'before_llm' (the paper's setup) or 'llm'"})
    layer: int = field(default=0, metadata={"help": "K: 0 before the LLM; >= 1 selects on layer K's input"})
    negate_relevance: bool = field(
        default=False,
        metadata={
            "help": "negate the token-instruction cosine before scaling (the release does, on CLIP embeddings); "
            "False follows the port to models without a CLIP text tower"
        },
    )

    instruction: str = field(
        default="question",
        metadata={
            "help": "'question': relevance to the question's own tokens, given by the harness (the release's input); "
            "'prompt_tail': to every prompt token after the last image (for callers that give no question)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.negate_relevance, bool):
            raise TypeError(f"negate_relevance must be a bool, got {self.negate_relevance!r}")
        check_choice("instruction", self.instruction, INSTRUCTIONS)
        if self.instruction == "question" and self.scope != "before_llm":
            raise ValueError(
                "instruction='question' embeds the question in the LLM's input space, where a before-LLM cut reads the "
                "visual tokens: use scope='before_llm', or instruction='prompt_tail' to cut inside the LLM"
            )


def instruction_relevance(visual: torch.Tensor, text: torch.Tensor, negate: bool = False) -> torch.Tensor:
    """Relevance of each visual token to the instruction, min-max scaled as the release does.

    `rhat_i` = mean over the instruction's tokens of `cos(v_i, t_m)` (negated when `negate`), then
    `r = (rhat - min + 1e-6) / (max - min)`. Without text, or when every token has the same `rhat`, every token
    gets relevance 1 (the kernel is then the similarity alone).

    Args:
        visual (`Tensor [L, D]`), text (`Tensor [T, D]`): embeddings in one space.

    Returns:
        `FloatTensor [L]` (float32), positive.
    """
    if text.shape[0] == 0:
        return torch.ones(visual.shape[0], dtype=torch.float32, device=visual.device)
    cosine = F.normalize(visual.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T  # [L, T]
    rhat = cosine.mean(dim=1) * (-1.0 if negate else 1.0)
    spread = rhat.max() - rhat.min()
    scaled = (rhat - rhat.min() + 1e-6) / spread
    return torch.where(spread > 0, scaled, torch.ones_like(rhat))


def dpp_greedy_map(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Fast greedy MAP inference of a DPP (Chen et al., 2018), exactly `k` steps, as the release runs it.

    `d2 = diag(L)`; each step picks `j = argmax d2` (the first maximum), `e = (L[j] - C[:t, j] C[:t]) / sqrt(d2[j])`,
    `d2 -= e^2`, and excludes `j`. This is a pivoted Cholesky of `L`: O(L * t) per step, the pick stays a tensor (no
    host read per step). `d2[j]` is floored at 1e-12 where the release would divide by zero. Float32, as the release.

    Args:
        kernel (`Tensor [L, L]`): symmetric positive semi-definite.
        k (`int`): 0 <= k <= L.

    Returns:
        `LongTensor [k]`: the picks in order.
    """
    n_tokens = kernel.shape[0]
    if kernel.dim() != 2 or kernel.shape[1] != n_tokens:
        raise ValueError(f"kernel must be square [L, L], got shape {tuple(kernel.shape)}")
    if not 0 <= k <= n_tokens:
        raise ValueError(f"k must be in [0, {n_tokens}], got {k}")
    kernel = kernel.float()
    residual = kernel.diagonal().clone()  # d2
    rows = torch.zeros(k, n_tokens, dtype=torch.float32, device=kernel.device)
    order = torch.empty(k, dtype=torch.long, device=kernel.device)
    for step in range(k):
        pick = residual.argmax().view(1)  # [1]: indexing with a 0-d tensor would read it back to the host
        order[step : step + 1] = pick
        pivot_residual = residual.index_select(0, pick).clamp_min(_MIN_RESIDUAL)
        row = (kernel.index_select(0, pick)[0] - rows[:step].index_select(1, pick)[:, 0] @ rows[:step])
        rows[step] = row * pivot_residual.rsqrt()
        residual = (residual - rows[step].square()).index_fill_(0, pick, float("-inf"))
    return order


def instruction_embeddings(ctx: SelectionContext, instruction: str) -> torch.Tensor:
    """The embeddings relevance is measured against: the question's tokens (`ctx.question_embeds`) or the prompt
    rows after the last image (`ctx.hidden_states[ctx.query_index]`).

    Raises:
        ValueError: `instruction="question"` and no question was given for this prompt.
    """
    if instruction == "prompt_tail":
        return ctx.hidden_states[ctx.query_index]
    if ctx.question_embeds is None:
        raise ValueError(
            "cdpruner (instruction='question') needs each prompt's question: call "
            "pruner.set_question_texts(texts, tokenizer) before the prefill (the model wrappers do), or set "
            "instruction='prompt_tail'"
        )
    return ctx.question_embeds


@register_method("cdpruner", CDPrunerConfig, needs=("hidden_states", "question_text"))
def cdpruner_select(ctx: SelectionContext, config: CDPrunerConfig) -> Selection:
    """Keep `ctx.n_keep` visual tokens by the greedy MAP of the conditional DPP.

    Reads `ctx.hidden_states [S, D]` (before the LLM: the input embeddings): the visual rows, and for relevance the
    question's token embeddings `ctx.question_embeds` (or, with `instruction="prompt_tail"`, the rows
    `ctx.query_index`: every prompt token after the last image).
    """
    if ctx.hidden_states is None:
        raise ValueError("cdpruner needs ctx.hidden_states (declare needs=('hidden_states',)); got None")
    visual = ctx.hidden_states[ctx.visual_index]
    text = instruction_embeddings(ctx, config.instruction)
    relevance = instruction_relevance(visual, text.to(visual.device), config.negate_relevance)
    unit = F.normalize(visual.float(), dim=-1)
    kernel = relevance[:, None] * (unit @ unit.T) * relevance[None, :]
    return Selection(keep=sorted_keep(dpp_greedy_map(kernel, ctx.n_keep)))
