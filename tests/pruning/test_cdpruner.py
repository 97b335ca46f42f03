"""CDPruner: relevance scaling, the greedy MAP of the DPP against the determinant definition, hand-made cases,
the selection on a context, config; on every family, the question each row of a ragged batch reads."""

from dataclasses import replace

import pytest
import torch
from support.contexts import make_context
from support.reference import recording_pruner
from support.tiny import FAMILIES, ragged_inputs, tiny_wrapper

from vlmeval_ivcp import prune
from vlmeval_ivcp.datasets.demo import write_demo_mcq
from vlmeval_ivcp.datasets.registry import build_dataset
from vlmeval_ivcp.pruning.methods.cdpruner import (
    CDPrunerConfig,
    cdpruner_select,
    dpp_greedy_map,
    instruction_relevance,
)
from vlmeval_ivcp.pruning.registry import get_method


def _determinant_reference(kernel: torch.Tensor, k: int) -> list[int]:
    """Greedy MAP by its definition: each step adds the token that maximises det(L[S + j]) (float64)."""
    kernel = kernel.double()
    chosen: list[int] = []
    for _ in range(k):
        best, best_det = -1, -float("inf")
        for j in range(kernel.shape[0]):
            if j in chosen:
                continue
            subset = chosen + [j]
            det = float(torch.linalg.det(kernel[subset][:, subset]))
            if det > best_det:
                best, best_det = j, det
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", range(4))
def test_greedy_map_matches_the_determinant_definition(seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(14, 20, generator=generator), dim=-1)
    relevance = torch.rand(14, generator=generator) + 0.1
    kernel = relevance[:, None] * (features @ features.T) * relevance[None]
    assert dpp_greedy_map(kernel, 8).tolist() == _determinant_reference(kernel, 8)


def test_greedy_map_on_hand_made_kernels():
    # A diagonal kernel: the picks follow the diagonal, largest first, ties to the lower index.
    assert dpp_greedy_map(torch.diag(torch.tensor([1.0, 3.0, 2.0, 3.0])), 4).tolist() == [1, 3, 2, 0]
    # Two near-duplicates of weight 1 and an orthogonal token of weight 0.8: after the first duplicate the
    # orthogonal token beats the second duplicate (whose residual is 1 - 0.99^2).
    kernel = torch.tensor([[1.0, 0.99, 0.0], [0.99, 1.0, 0.0], [0.0, 0.0, 0.64]])
    assert dpp_greedy_map(kernel, 3).tolist() == [0, 2, 1]
    # Exact duplicates leave no residual: the release would divide by zero, here the picks stay distinct, no NaN.
    assert sorted(dpp_greedy_map(torch.ones(3, 3), 3).tolist()) == [0, 1, 2]
    assert dpp_greedy_map(torch.ones(3, 3), 0).numel() == 0


def test_relevance_is_mean_cosine_min_max_scaled():
    visual = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    text = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    rhat = torch.tensor([(1 + 2**-0.5) / 2, (0 + 2**-0.5) / 2, (-1 - 2**-0.5) / 2])
    spread = rhat.max() - rhat.min()
    torch.testing.assert_close(instruction_relevance(visual, text), (rhat - rhat.min() + 1e-6) / spread)
    torch.testing.assert_close(instruction_relevance(visual, text, negate=True), (-rhat + rhat.max() + 1e-6) / spread)
    torch.testing.assert_close(instruction_relevance(visual, text[:0]), torch.ones(3))
    torch.testing.assert_close(instruction_relevance(visual[:1].repeat(3, 1), text), torch.ones(3))


def test_select_prefers_relevant_and_diverse_tokens():
    # Visual tokens at positions 1..4: two copies along the question, one orthogonal, one opposite the question.
    hidden = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0],
                           [1.0, 0.0, 0.0]])
    # The question's embeddings: the prompt rows after the image hold the same here ([0, 5]: its text tokens).
    ctx = make_context(6, [1, 2, 3, 4], 2, text_index=[0, 5], hidden_states=hidden, question_embeds=hidden[[0, 5]])
    for instruction in ("question", "prompt_tail"):
        config = CDPrunerConfig(ratio=0.5, instruction=instruction)
        # The first copy is the most relevant; the orthogonal token is the most relevant one not duplicating it.
        assert cdpruner_select(ctx, config).keep.tolist() == [0, 2]
    # Negated (the release on CLIP embeddings): the opposite token is now the most relevant.
    assert cdpruner_select(ctx, CDPrunerConfig(ratio=0.5, negate_relevance=True)).keep.tolist() == [2, 3]
    # A question along the orthogonal token's direction: it comes first, then the copy least like it (0 and 1 tie,
    # the lower index wins).
    along_y = replace(ctx, question_embeds=torch.tensor([[0.0, 1.0, 0.0]]))
    assert cdpruner_select(along_y, CDPrunerConfig(ratio=0.5)).keep.tolist() == [0, 2]
    assert cdpruner_select(replace(along_y, n_keep=1), CDPrunerConfig()).keep.tolist() == [2]


def test_the_question_is_required_unless_the_prompt_tail_is_asked_for():
    ctx = make_context(6, [1, 2, 3, 4], 2, hidden_states=torch.randn(6, 3))
    with pytest.raises(ValueError, match="set_question_texts"):
        cdpruner_select(ctx, CDPrunerConfig(ratio=0.5))
    assert cdpruner_select(ctx, CDPrunerConfig(ratio=0.5, instruction="prompt_tail")).keep.numel() == 2
    with pytest.raises(ValueError, match="scope='before_llm'"):
        CDPrunerConfig(scope="llm", layer=2)
    assert CDPrunerConfig(scope="llm", layer=2, instruction="prompt_tail").layer == 2
    with pytest.raises(ValueError, match="instruction must be one of"):
        CDPrunerConfig(instruction="tail")


def test_config_defaults_and_registry():
    config = CDPrunerConfig()
    assert (config.scope, config.layer, config.negate_relevance, config.instruction) == (
        "before_llm", 0, False, "question"
    )
    assert get_method("cdpruner").needs == frozenset({"hidden_states", "question_text"})
    with pytest.raises(TypeError):
        CDPrunerConfig(negate_relevance="yes")


QUESTIONS = ["What?", "Colour of it?", "Is there a cat here?"]
SIZES = [[(112, 112)], [(112, 112), (56, 56)], [(56, 56)]]  # rows keep different counts: a ragged batch


@pytest.mark.parametrize("family", FAMILIES)
def test_each_row_reads_its_own_question_and_keeps_what_it_keeps_alone(family):
    wrapper = tiny_wrapper(family=family)
    model, tokenizer = wrapper.model, wrapper.processor.tokenizer
    inputs, layouts, alone = ragged_inputs(wrapper, QUESTIONS, SIZES)
    pruner, seen = recording_pruner(model, "cdpruner", ratio=0.5)
    with pruner, torch.no_grad():
        pruner.set_image_layouts(layouts)
        pruner.set_question_texts(QUESTIONS, tokenizer)
        model(**inputs)
        batch_kept, batch_seen = pruner.last.kept, list(seen)
        kept_alone = []
        for question, (row_inputs, row_layouts) in zip(QUESTIONS, alone, strict=True):
            pruner.set_image_layouts(row_layouts)
            pruner.set_question_texts([question], tokenizer)
            model(**row_inputs)
            kept_alone.append(pruner.last.kept[0])
        # Another question changes what some row keeps: relevance is measured against it.
        pruner.set_image_layouts(layouts)
        pruner.set_question_texts(["A red dog on the grass, far away."] * 3, tokenizer)
        model(**inputs)
        other_kept = pruner.last.kept
        with pytest.raises(ValueError, match="set_question_texts"):
            pruner.set_image_layouts(layouts)
            model(**inputs)  # the questions were used once
    assert all(torch.equal(a, b) for a, b in zip(batch_kept, kept_alone, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(batch_kept, other_kept, strict=True))
    images_per_row = [len(sizes) for sizes in SIZES]
    rows = [row for row, count in enumerate(images_per_row) for _ in range(count)]
    for row, ctx in zip(rows, batch_seen, strict=True):
        ids = torch.tensor(tokenizer(QUESTIONS[row], add_special_tokens=False)["input_ids"])
        assert ctx.question_text == QUESTIONS[row]
        torch.testing.assert_close(ctx.question_embeds, model.get_input_embeddings()(ids), rtol=0, atol=0)


def test_set_question_texts_checks_its_input():
    wrapper = tiny_wrapper(family="llava")
    inputs, _, _ = ragged_inputs(wrapper, QUESTIONS[:2], SIZES[:1] * 2)
    with prune(wrapper.model, "cdpruner", ratio=0.5) as pruner, torch.no_grad():
        with pytest.raises(ValueError, match="tokenizer"):
            pruner.set_question_texts(QUESTIONS[:2])
        pruner.set_question_texts(QUESTIONS[:1], wrapper.processor.tokenizer)
        with pytest.raises(ValueError, match="one string per prompt of the batch \\(2\\)"):
            wrapper.model(**inputs)


def test_the_wrapper_hands_each_row_its_question(tmp_path):
    wrapper = tiny_wrapper(family="llava")
    dataset = build_dataset("DemoMCQ", write_demo_mcq(tmp_path).parent)
    messages = [dataset.message(position) for position in range(3)]
    questions = [dataset.question_text(position) for position in range(3)]
    texts = ["\n".join(item["value"] for item in message if item["type"] == "text") for message in messages]
    budget, wrapper.max_new_tokens = wrapper.max_new_tokens, 1
    wrapper.set_method("cdpruner", ratio=0.5)
    try:
        kept = {}
        for name, given in (("questions", questions), ("texts", texts), ("default", None)):
            wrapper.generate_batch(messages, dataset.name, questions=given)
            kept[name] = [row.kept_visual for row in wrapper.batch_stats]
        alone = []
        for message, question in zip(messages, questions, strict=True):
            wrapper.generate_batch([message], dataset.name, questions=[question])
            alone.append(wrapper.batch_stats[0].kept_visual)
    finally:
        wrapper.set_method("none")
        wrapper.max_new_tokens = budget
    assert kept["questions"] == alone  # each row reads its own question in a batch
    assert kept["default"] == kept["texts"]  # without questions, each message's text
