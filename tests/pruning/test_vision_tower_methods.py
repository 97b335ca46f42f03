"""VisionZip and PruMerge+ through the engine on LLaVA-1.5's tiny checkpoint against the releases' loop references
(tests/support/releases.py) fed what the releases read from CLIP: hooks on the layer's `q_proj`/`k_proj` (as
PruMerge+'s release), the attention recomputed from them, and `hidden_states[-2]` as the projector input. The kept
sets and merged vectors must be exactly the releases'; the runs' logits are checked on every family in
test_engine_families.py, test_engine_ragged.py and test_methods_e2e.py against the reference fed the merged vectors.
"""

from __future__ import annotations

import pytest
import torch
from support.releases import release_prumerge_plus, release_visionzip
from support.tiny import family_inputs, tiny_wrapper

from vlmeval_ivcp import prune
from vlmeval_ivcp.pruning.methods.visionzip import visionzip_counts

QUESTIONS = ["What is in the picture?"]


def _clip_reads(model, inputs: dict, layer: int):
    """`(q, k, features)` of one picture: the raw `q_proj`/`k_proj` outputs of CLIP layer `layer` (`[N + 1, H d]`,
    [CLS] first) and the patch rows of `hidden_states[-2]` (`[N, C]`)."""
    tower = model.model.vision_tower
    attention = tower.encoder.layers[layer].self_attn
    outputs = {}
    handles = [
        attention.q_proj.register_forward_hook(lambda m, a, out: outputs.update(q=out[0])),
        attention.k_proj.register_forward_hook(lambda m, a, out: outputs.update(k=out[0])),
    ]
    try:
        with torch.no_grad():
            hidden = tower(inputs["pixel_values"], output_hidden_states=True).hidden_states[-2][0, 1:]
    finally:
        for handle in handles:
            handle.remove()
    return outputs["q"], outputs["k"], hidden


def _run(method: str, **options):
    wrapper = tiny_wrapper("sdpa", family="llava")
    inputs, layouts = family_inputs(wrapper, QUESTIONS)
    with prune(wrapper.model, method, **options) as pruner, torch.no_grad():
        wrapper.model(**inputs)
    return wrapper.model, inputs, pruner.last.stages[0][0]


@pytest.mark.parametrize("ratio,preset", [(0.5, "official"), (0.75, "matched"), (0.25, "official")])
def test_visionzip_keeps_and_merges_as_the_release_on_llava(ratio, preset):
    model, inputs, selection = _run("visionzip", ratio=ratio, preset=preset)
    heads = model.config.vision_config.num_attention_heads
    q, k, features = _clip_reads(model, inputs, layer=-2)
    n_tokens, width = k.shape
    q_heads, k_heads = q.view(n_tokens, heads, -1).transpose(0, 1), k.view(n_tokens, heads, -1).transpose(0, 1)
    weights = (q_heads @ k_heads.transpose(1, 2) * q_heads.shape[-1] ** -0.5).softmax(-1)  # [H, N+1, N+1]
    cls_attention = weights[:, 0, 1:].sum(0)  # the release's `attn_weights[:, :, 0, 1:]` summed over heads
    keys = k.view(n_tokens, heads, -1).mean(1)[1:]  # head-mean keys (`raw_key_states.mean(1)`)
    n_dominant, n_contextual = visionzip_counts(max(1, round(ratio * (n_tokens - 1))), preset)
    dominant, targets, contextual = release_visionzip(cls_attention, keys, features, n_dominant, n_contextual)
    assert selection.keep.tolist() == sorted(dominant + targets)
    assert selection.parts["dominant"].tolist() == dominant and selection.parts["contextual"].tolist() == targets
    assert selection.merged.space == "projector_input"
    assert selection.keep[selection.merged.slots].tolist() == targets
    torch.testing.assert_close(selection.merged.vectors, contextual, rtol=1e-5, atol=1e-5)


def test_prumerge_plus_keeps_and_merges_as_the_release_on_llava():
    model, inputs, selection = _run("prumerge_plus")
    q, k, features = _clip_reads(model, inputs, layer=-1)
    # The release: one "head" over the concatenated vectors, scaled by C ** -0.5, the [CLS] row over the patches.
    cls_attention = (q @ k.T * q.shape[-1] ** -0.5).softmax(-1)[0, 1:]
    kept, updated, extra = release_prumerge_plus(cls_attention, k[1:], features)
    pruned = [j for j in range(features.shape[0]) if j not in kept]
    host = max(pruned, key=lambda j: (cls_attention[j], -j))  # the extra token's slot: the most attended pruned patch
    assert selection.keep.tolist() == sorted(kept + [host])
    assert selection.parts["extra"].tolist() == [host]
    slots = {int(token): row for row, token in enumerate(selection.keep[selection.merged.slots].tolist())}
    vectors = selection.merged.vectors
    torch.testing.assert_close(vectors[[slots[token] for token in kept]], updated, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vectors[slots[host]], extra, rtol=1e-5, atol=1e-5)
