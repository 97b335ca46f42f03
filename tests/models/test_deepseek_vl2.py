"""DeepSeek-VL2 assembled from transformers' parts, on tiny checkpoints in the official layout (MLA as in
deepseek-vl2-small, plain attention as in deepseek-vl2-tiny): the official weight names and their mapping, the tiling
and token layout, the chat format, the assembled forward against hand-placed features, batching, generation, eager vs
SDPA, refused variants, and a pruned run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers.core_model_loading import revert_weight_conversion

from vlmeval_ivcp.models.deepseek_vl2 import (
    DeepseekVL2,
    DeepseekVL2Config,
    DeepseekVL2ForCausalLM,
    DeepseekVL2Processor,
    deepseek_chat_prompt,
    image_layout,
)
from vlmeval_ivcp.models.tiny.deepseek_vl2 import MHA, build, official_config

CELLS = 2  # 42-pixel views: 3 x 3 patches, zero-padded to 4 x 4, merged 2 x 2
HEADS, WIDTH = 2, 32  # the tiny SigLIP


VARIANTS = {"mla": True, "mha": False}  # the language models of deepseek-vl2-small and deepseek-vl2-tiny


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: build(root / f"tiny-deepseek-vl2-{name}", use_mla=mla) for name, mla in VARIANTS.items()}


@pytest.fixture(scope="module")
def wrappers(checkpoints) -> dict[str, DeepseekVL2]:
    return {name: DeepseekVL2(str(path), dtype="float32", max_new_tokens=4) for name, path in checkpoints.items()}


@pytest.fixture(scope="module")
def checkpoint(checkpoints) -> Path:
    return checkpoints["mla"]


@pytest.fixture(scope="module")
def wrapper(wrappers) -> DeepseekVL2:
    return wrappers["mla"]


@pytest.fixture(scope="module")
def official(checkpoint) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


def _picture(seed: int, size: tuple[int, int]) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def _batch(wrapper: DeepseekVL2, sizes: list[tuple[int, int]], questions: list[str]) -> dict:
    prompts = [wrapper.chat_prompt(1, question) for question in questions]
    return wrapper.encode(prompts, [_picture(index, size) for index, size in enumerate(sizes)])


# ----------------------------------------------------------------------------------------------- checkpoint names
def test_the_tiny_checkpoint_is_in_the_official_layout(checkpoint, official):
    shapes = {name: tuple(tensor.shape) for name, tensor in official.items()}
    assert shapes["vision.pos_embed"] == (1, 9, WIDTH)  # timm keeps the table as [1, N, D]
    assert shapes["vision.blocks.1.attn.qkv.weight"] == (3 * WIDTH, WIDTH)
    assert shapes["vision.patch_embed.proj.weight"] == (WIDTH, 3, 14, 14)
    assert shapes["projector.layers.0.weight"] == (64, 4 * WIDTH) and "projector.layers.2.bias" in shapes
    assert shapes["image_newline"] == shapes["view_seperator"] == (64,)
    assert shapes["language.model.layers.1.mlp.experts.3.gate_proj.weight"] == (32, 64)
    assert {"language.model.layers.0.mlp.gate_proj.weight", "language.model.layers.1.mlp.gate.weight",
            "language.model.layers.2.self_attn.kv_a_proj_with_mqa.weight", "vision.norm.weight",
            "language.lm_head.weight"} <= set(shapes)
    assert not any(name.startswith("model.") for name in shapes), "no transformers-side names are written"
    config = json.loads((checkpoint / "config.json").read_text())
    assert {"vision_config", "projector_config", "language_config", "candidate_resolutions"} <= set(config)
    assert config["vision_config"]["width"] == WIDTH and "text_config" not in config


def test_the_plain_attention_checkpoint_has_the_official_llama_attention_names(checkpoints):
    names = set(load_file(checkpoints["mha"] / "model.safetensors"))
    projections = ("q_proj", "k_proj", "v_proj", "o_proj")
    assert {f"language.model.layers.0.self_attn.{projection}.weight" for projection in projections} <= names
    assert not any("kv_a_proj" in name for name in names)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_official_state_dict_loads_into_identical_parameters(checkpoints, variant, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(checkpoints[variant], folder)
    official = load_file(folder / "model.safetensors")
    # The official checkpoints also hold timm's unused attention-pooling head.
    save_file({**official, "vision.attn_pool.latent": torch.zeros(1, 1, WIDTH)}, folder / "model.safetensors")
    model, info = DeepseekVL2ForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert not info["unexpected_keys"]
    params = dict(model.named_parameters())
    positions = params["model.vision_tower.embeddings.position_embedding.weight"]
    assert torch.equal(positions, official["vision.pos_embed"][0])
    gate_up = params["model.language_model.layers.2.mlp.experts.gate_up_proj"]  # [experts, gate ; up, hidden]
    assert torch.equal(gate_up[3, :32], official["language.model.layers.2.mlp.experts.3.gate_proj.weight"])
    assert torch.equal(gate_up[3, 32:], official["language.model.layers.2.mlp.experts.3.up_proj.weight"])
    assert torch.equal(params["model.view_separator"], official["view_seperator"])
    assert torch.equal(params["lm_head.weight"], official["language.lm_head.weight"])
    written = revert_weight_conversion(model, model.state_dict())
    assert written.keys() == official.keys()
    assert all(torch.equal(written[name], official[name]) for name in official)


def test_the_fused_qkv_splits_into_query_key_value(wrapper, official):
    attention = wrapper.model.model.vision_tower.encoder.layers[0].self_attn
    x = torch.randn(2, 9, WIDTH, generator=torch.Generator().manual_seed(0))
    # timm: qkv(x) reshaped to [B, N, 3, heads, head_dim], then q, k, v = unbind(2).
    qkv = x @ official["vision.blocks.0.attn.qkv.weight"].T + official["vision.blocks.0.attn.qkv.bias"]
    q, k, v = qkv.view(2, 9, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) * (WIDTH // HEADS) ** -0.5, dim=-1)
    mixed = (weights @ v).transpose(1, 2).reshape(2, 9, WIDTH)
    expected = mixed @ official["vision.blocks.0.attn.proj.weight"].T + official["vision.blocks.0.attn.proj.bias"]
    with torch.no_grad():
        torch.testing.assert_close(attention(x)[0], expected, atol=1e-5, rtol=0)


def _official_rope(x: torch.Tensor, pairs_interleaved: bool) -> torch.Tensor:
    """RoPE as the official code applies it to `[B, H, S, d]` (theta 10000, positions 0..S-1): rotate_half over the
    two halves of `cat(freqs, freqs)`; the MLA path first regroups interleaved pairs into halves."""
    d, seq = x.shape[-1], x.shape[-2]
    if pairs_interleaved:
        x = x.unflatten(-1, (d // 2, 2)).transpose(-1, -2).flatten(-2)
    freqs = torch.arange(seq).float()[:, None] / 10000.0 ** (torch.arange(0, d, 2).float() / d)
    angles = torch.cat([freqs, freqs], dim=-1)
    rotated = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], dim=-1)
    return x * angles.cos() + rotated * angles.sin()


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """`[B, H, S, *]` -> `[B, S, H * dv]`."""
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)


def _official_attention(weights: dict, layer: int, x: torch.Tensor, mla: bool) -> torch.Tensor:
    """The official decoder attention, from the official weight names: MLA (modeling_deepseek.py, q_lora_rank null,
    no cache) or transformers 4.38's LlamaAttention (the official `mha_eager`)."""
    def w(name: str) -> torch.Tensor:
        return weights[f"language.model.layers.{layer}.self_attn.{name}.weight"]

    batch, seq, _ = x.shape
    if mla:
        heads, nope, rope, value, rank = 4, 8, 8, 16, 16
        q = (x @ w("q_proj").T).view(batch, seq, heads, nope + rope).transpose(1, 2)
        latent, k_pe = (x @ w("kv_a_proj_with_mqa").T).split([rank, rope], dim=-1)
        latent = latent * torch.rsqrt(latent.pow(2).mean(-1, keepdim=True) + 1e-6) * w("kv_a_layernorm")
        kv = (latent @ w("kv_b_proj").T).view(batch, seq, heads, nope + value).transpose(1, 2)
        q_pe = _official_rope(q[..., nope:], pairs_interleaved=True)
        k_pe = _official_rope(k_pe[:, None], pairs_interleaved=True).expand(-1, heads, -1, -1)
        keys = torch.cat([kv[..., :nope], k_pe], dim=-1)
        mixed = _causal_attention(torch.cat([q[..., :nope], q_pe], -1), keys, kv[..., nope:], (nope + rope) ** -0.5)
    else:
        heads, kv_heads, head = 4, 2, 16
        q = _official_rope((x @ w("q_proj").T).view(batch, seq, heads, head).transpose(1, 2), False)
        k = _official_rope((x @ w("k_proj").T).view(batch, seq, kv_heads, head).transpose(1, 2), False)
        v = (x @ w("v_proj").T).view(batch, seq, kv_heads, head).transpose(1, 2)
        repeat = heads // kv_heads
        mixed = _causal_attention(q, k.repeat_interleave(repeat, 1), v.repeat_interleave(repeat, 1), head**-0.5)
    return mixed @ w("o_proj").T


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_decoder_attention_follows_the_official_formulas(wrappers, checkpoints, variant):
    weights = load_file(checkpoints[variant] / "model.safetensors")
    decoder = wrappers[variant].model.model.language_model
    x = torch.randn(1, 7, 64, generator=torch.Generator().manual_seed(2))
    positions = torch.arange(7)[None]
    with torch.no_grad():  # SDPA without a mask attends causally
        got = decoder.layers[1].self_attn(x, attention_mask=None, position_embeddings=decoder.rotary_emb(x, positions))
    expected = _official_attention(weights, 1, x, mla=VARIANTS[variant])
    torch.testing.assert_close(got[0], expected, atol=1e-5, rtol=0)


def test_the_projector_merges_2x2_patch_blocks_channel_major(wrapper):
    projector = wrapper.model.model.projector
    patches = torch.randn(1, 9, WIDTH, generator=torch.Generator().manual_seed(1))
    grid = torch.zeros(4, 4, WIDTH)  # the 3 x 3 patch grid, zero-padded at the bottom and right
    grid[:3, :3] = patches[0].view(3, 3, WIDTH)
    # Cell (i, j) concatenates, channel by channel, its block's patches in raster order (F.unfold's order).
    merged = torch.stack([
        torch.stack([grid[2 * i + di, 2 * j + dj] for di in (0, 1) for dj in (0, 1)], dim=1).flatten()
        for i in range(CELLS) for j in range(CELLS)
    ])
    with torch.no_grad():
        torch.testing.assert_close(projector(patches)[0], projector.layers(merged), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------- tiling and prompt
@pytest.mark.parametrize(
    ("size", "tiles"),  # (width, height) -> (width tiles, height tiles) among the 42-pixel candidates
    [((90, 70), (2, 2)), ((40, 120), (1, 3)), ((130, 40), (3, 1)), ((30, 30), (1, 1))],
)
def test_image_tokens_and_layout_follow_the_official_tiling(wrapper, size, tiles):
    inputs = wrapper.encode([wrapper.chat_prompt(1, "Colour?")], [_picture(0, size)])
    width_tiles, height_tiles = tiles
    expected = CELLS * (CELLS + 1) + 1 + (height_tiles * CELLS) * (width_tiles * CELLS + 1)
    assert int((inputs["input_ids"] == wrapper.model.config.image_token_id).sum()) == expected
    assert inputs["images_spatial_crop"].tolist() == [[width_tiles, height_tiles]]
    assert inputs["pixel_values"].shape == (1 + width_tiles * height_tiles, 3, 42, 42)
    (layout,) = inputs["image_layouts"][0]
    assert layout == image_layout(width_tiles, height_tiles, CELLS)
    assert layout.n_tokens == expected and layout.tiles == (height_tiles, width_tiles)


def test_layout_of_a_2x2_tiling_has_row_and_view_separators():
    layout = image_layout(2, 2, CELLS)
    assert [(view.kind, view.offset, view.rows, view.cols, view.row_separator) for view in layout.views] == [
        ("global", 0, 2, 2, True), ("local", 7, 4, 4, True),
    ]
    assert layout.separators().tolist() == [2, 5, 6, 11, 16, 21, 26]
    tail = image_layout(2, 2, CELLS, global_view_pos="tail")
    assert [(view.kind, view.offset) for view in tail.views] == [("local", 0), ("global", 21)]


def test_a_checkpoint_without_processor_settings_is_refused(checkpoint, tmp_path):
    folder = tmp_path / "no-processor"
    shutil.copytree(checkpoint, folder)
    (folder / "processor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="processor_config.json"):
        DeepseekVL2Processor.from_pretrained(folder)


def test_more_than_two_images_are_not_tiled(wrapper):
    inputs = wrapper.encode([wrapper.chat_prompt(3, "Same?")], [_picture(i, (130, 40)) for i in range(3)])
    assert inputs["images_spatial_crop"].tolist() == [[1, 1]] * 3
    assert [layout.n_tokens for layout in inputs["image_layouts"][0]] == [13, 13, 13]


def test_chat_prompt_is_the_official_deepseek_template(wrapper):
    assert deepseek_chat_prompt(1, "What is in the picture?") == (
        "<|User|>: <image>\nWhat is in the picture?\n\n<|Assistant|>:"
    )
    assert deepseek_chat_prompt(2, "Same?") == "<|User|>: <image>\n<image>\nSame?\n\n<|Assistant|>:"
    tokenizer = wrapper.processor.tokenizer
    inputs = wrapper.encode([deepseek_chat_prompt(1, "Hi")], [_picture(0, (42, 42))])
    image_id = wrapper.model.config.image_token_id
    expected = (
        [tokenizer.bos_token_id] + tokenizer.encode("<|User|>: ", add_special_tokens=False) + [image_id] * 13
        + tokenizer.encode("\nHi\n\n<|Assistant|>:", add_special_tokens=False)
    )
    assert inputs["input_ids"][0].tolist() == expected
    assert tokenizer.convert_ids_to_tokens(expected[1]) == "<|User|>" and wrapper.grounding_frame == "norm999"


# ----------------------------------------------------------------------------------------------- forward
def _hand_placed_embeddings(wrapper: DeepseekVL2, inputs: dict) -> torch.Tensor:
    """The token embeddings with each image's features written over its <image> tokens, laid out by hand."""
    inner = wrapper.model.model
    cells = inner.projector(inner.vision_tower(inputs["pixel_values"]).last_hidden_state)  # [views, 4, D]
    rows = []
    view = 0
    for width_tiles, height_tiles in inputs["images_spatial_crop"].tolist():
        for row in range(CELLS):  # the global view, a newline after each row
            rows += [cells[view, row * CELLS + col] for col in range(CELLS)] + [inner.image_newline]
        rows.append(inner.view_separator)
        for row in range(height_tiles * CELLS):  # every tile row of cells, left to right across the tiles
            tile_row, cell_row = divmod(row, CELLS)
            for col in range(width_tiles * CELLS):
                tile_col, cell_col = divmod(col, CELLS)
                rows.append(cells[view + 1 + tile_row * width_tiles + tile_col, cell_row * CELLS + cell_col])
            rows.append(inner.image_newline)
        view += 1 + width_tiles * height_tiles
    embeds = inner.get_input_embeddings()(inputs["input_ids"]).clone()
    embeds[inputs["input_ids"] == wrapper.model.config.image_token_id] = torch.stack(rows)
    return embeds


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_equals_the_language_model_on_hand_placed_features(wrappers, variant):
    wrapper = wrappers[variant]
    inputs = _batch(wrapper, [(90, 70), (40, 120)], ["What is in the picture?", "Colour?"])
    inputs.pop("image_layouts")
    with torch.no_grad():
        logits = wrapper.model(**inputs).logits
        embeds = _hand_placed_embeddings(wrapper, inputs)
        hidden = wrapper.model.model.language_model(
            inputs_embeds=embeds, attention_mask=inputs["attention_mask"]
        ).last_hidden_state
    torch.testing.assert_close(logits, wrapper.model.lm_head(hidden), atol=1e-5, rtol=0)


def test_a_left_padded_batch_equals_each_prompt_alone(wrapper):
    sizes, questions = [(90, 70), (40, 120)], ["What is in the picture?", "Colour?"]
    batch = _batch(wrapper, sizes, questions)
    batch.pop("image_layouts")
    assert int(batch["attention_mask"][1].sum()) < batch["attention_mask"].shape[1], "the second prompt is padded"
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batched = wrapper.model(**batch, position_ids=positions).logits
        for row, (size, question) in enumerate(zip(sizes, questions, strict=True)):
            alone = wrapper.encode([wrapper.chat_prompt(1, question)], [_picture(row, size)])
            alone.pop("image_layouts")
            length = alone["input_ids"].shape[1]
            torch.testing.assert_close(batched[row, -length:], wrapper.model(**alone).logits[0], atol=1e-5, rtol=0)


def test_generate_answers_a_message_and_records_its_cost(wrapper, tmp_path):
    path = tmp_path / "picture.png"
    _picture(0, (90, 70)).save(path)
    answer = wrapper.generate([{"type": "image", "value": str(path)}, {"type": "text", "value": "Describe it."}])
    assert isinstance(answer, str)
    stats = wrapper.stats
    assert stats.visual_tokens == stats.kept_visual_tokens == 27
    assert 1 <= stats.new_tokens <= 4 and stats.prompt_tokens > 27 and stats.kv_cache_bytes > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_eager_and_sdpa_give_the_same_logits(wrappers, checkpoints, variant):
    wrapper = wrappers[variant]
    eager = DeepseekVL2(str(checkpoints[variant]), dtype="float32", attn_implementation="eager", max_new_tokens=4)
    assert eager.model.config.text_config._attn_implementation == "eager"
    assert wrapper.model.config.text_config._attn_implementation == "sdpa"
    inputs = _batch(wrapper, [(90, 70), (130, 40)], ["What is in the picture?", "Colour?"])
    inputs.pop("image_layouts")
    real = inputs["attention_mask"].bool()  # padded queries see no key: their outputs are implementation-defined
    with torch.no_grad():
        torch.testing.assert_close(
            eager.model(**inputs).logits[real], wrapper.model(**inputs).logits[real], atol=1e-5, rtol=0
        )


# ----------------------------------------------------------------------------------------------- refused variants
def _language(**changes) -> dict:
    config = official_config(vocab_size=300, num_layers=2, bos_id=0, eos_id=1)
    config["language_config"].update(changes)
    return config


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (dict(topk_method="noaux_tc", scoring_func="sigmoid"), "topk_method"),
        (dict(norm_topk_prob=True), "norm_topk_prob"),
        (dict(moe_layer_freq=2), "moe_layer_freq"),
        (dict(kv_lora_rank=None), "kv_lora_rank"),
    ],
    ids=["vl2-noaux_tc", "renormalised-topk", "sparse-moe-layers", "mla-without-latent"],
)
def test_variants_transformers_cannot_represent_are_refused(changes, named):
    with pytest.raises(ValueError, match=named):
        DeepseekVL2Config(**_language(**changes))


def test_use_mla_chooses_the_stock_decoder():
    assert type(DeepseekVL2Config(**_language()).text_config).__name__ == "DeepseekV2Config"
    plain = DeepseekVL2Config(**_language(**MHA)).text_config
    assert type(plain).__name__ == "DeepseekOcr2TextConfig"
    assert plain.mlp_layer_types == ["dense", "sparse"] and plain.head_dim == 16


def test_keys_missing_from_the_official_config_take_the_official_defaults():
    config = _language()
    assert DeepseekVL2Config(**config).text_config.rope_parameters["rope_theta"] == 10000.0
    del config["language_config"]["n_shared_experts"]  # official default None (transformers' default is 2)
    with pytest.raises(ValueError, match="n_shared_experts"):
        DeepseekVL2Config(**config)


# ----------------------------------------------------------------------------------------------- pruning
@pytest.mark.parametrize("variant", VARIANTS)
def test_random_pruning_runs_on_the_assembled_model(wrappers, variant, tmp_path):
    wrapper = wrappers[variant]
    path = tmp_path / "picture.png"
    _picture(0, (90, 70)).save(path)
    try:
        wrapper.set_method("random", ratio=0.5, layer=2)
        answer = wrapper.generate([{"type": "image", "value": str(path)}, {"type": "text", "value": "Colour?"}])
    finally:
        wrapper.set_method("none")
    assert isinstance(answer, str)
    assert (wrapper.stats.visual_tokens, wrapper.stats.kept_visual_tokens) == (27, 14)
    assert wrapper.stats.prefill_flops < wrapper.stats.prefill_flops_unpruned
