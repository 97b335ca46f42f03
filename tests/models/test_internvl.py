"""The InternVL adapter on its tiny checkpoint: chat format, dynamic tiles and their layouts, answers, pruning."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from support.reference import alive_per_layer, check_pruned_run, greedy_generate

from vlmeval_ivcp import prune
from vlmeval_ivcp.models.internvl import SYSTEM_PROMPT, InternVL, internvl_chat_prompt, internvl_layout
from vlmeval_ivcp.models.tiny.internvl import build
from vlmeval_ivcp.pruning.layout import ImageLayout, View

TOKENS_PER_TILE = 16  # 112-pixel tiles, 14-pixel patches, 0.5 pixel shuffle: 4 x 4


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory) -> InternVL:
    path = build(tmp_path_factory.mktemp("tiny") / "tiny-internvl")
    return InternVL(str(path), dtype="float32", max_new_tokens=4)


def _picture(seed: int, size: tuple[int, int]) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def _message(tmp_path, sizes: list[tuple[int, int]], question: str = "What is in the picture?") -> list[dict]:
    message = []
    for index, size in enumerate(sizes):
        path = tmp_path / f"picture{index}.png"
        _picture(index, size).save(path)
        message.append({"type": "image", "value": str(path)})
    return message + [{"type": "text", "value": question}]


def test_chat_prompt_puts_numbered_images_before_the_question():
    head = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
    assert internvl_chat_prompt(1, "Colour?") == f"{head}<IMG_CONTEXT>\nColour?<|im_end|>\n<|im_start|>assistant\n"
    assert internvl_chat_prompt(2, "Same?") == (
        f"{head}Image-1: <IMG_CONTEXT>\nImage-2: <IMG_CONTEXT>\nSame?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert SYSTEM_PROMPT.startswith("你是书生·万象，英文名是InternVL")


def test_layout_lists_the_tiles_in_raster_order_then_the_thumbnail():
    layout = internvl_layout(2, 3, TOKENS_PER_TILE)
    assert (layout.n_tokens, layout.tiles) == (7 * 16, (2, 3))
    assert [(view.offset, view.kind, view.tile) for view in layout.views] == [
        (0, "local", (0, 0)), (16, "local", (0, 1)), (32, "local", (0, 2)),
        (48, "local", (1, 0)), (64, "local", (1, 1)), (80, "local", (1, 2)),
        (96, "global", None),
    ]
    assert all((view.rows, view.cols) == (4, 4) for view in layout.views)
    assert layout.separators().numel() == 0


def test_a_single_tile_is_one_global_grid():
    assert internvl_layout(1, 1, 256) == ImageLayout(256, (View(0, 16, 16),))
    assert internvl_layout(1, 1, 256).tiles is None


@pytest.mark.parametrize("rows, cols, per_tile", [(2, 2, 15), (0, 2, 16), (2, 2, 0)])
def test_layout_rejects_bad_arrangements(rows, cols, per_tile):
    with pytest.raises(ValueError, match="tokens_per_tile|rows >= 1"):
        internvl_layout(rows, cols, per_tile)


# (width, height) -> (rows, cols) chosen by the GOT-OCR2 canvas selection with at most 12 tiles of 112 pixels.
SHAPES = {
    "small square": ((112, 112), (1, 1)),
    "square": ((224, 224), (2, 2)),
    "wide": ((336, 112), (1, 3)),
    "tall": ((112, 336), (3, 1)),
    "wide 2:1": ((448, 224), (2, 4)),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_tiles_and_layout_match_the_processor_tokens(wrapper, name):
    size, (rows, cols) = SHAPES[name]
    picture = _picture(0, size)
    assert wrapper.tile_arrangement(picture) == (rows, cols)
    inputs = wrapper.encode([wrapper.chat_prompt(1, "Describe.")], [picture])
    n_tiles = rows * cols + (1 if rows * cols > 1 else 0)
    ids = inputs["input_ids"][0]
    image_positions = (ids == wrapper.model.config.image_token_id).nonzero().flatten()
    assert image_positions.numel() == n_tiles * TOKENS_PER_TILE
    assert inputs["pixel_values"].shape == (n_tiles, 3, 112, 112)
    assert inputs["pixel_values"].dtype == wrapper.model.dtype
    # One contiguous span bracketed by <img> ... </img>.
    tokenizer = wrapper.processor.tokenizer
    first, last = int(image_positions[0]), int(image_positions[-1])
    assert last - first + 1 == image_positions.numel()
    assert tokenizer.convert_ids_to_tokens([int(ids[first - 1]), int(ids[last + 1])]) == ["<img>", "</img>"]
    (layout,), = inputs["image_layouts"]
    assert layout == internvl_layout(rows, cols, TOKENS_PER_TILE)
    assert layout.n_tokens == image_positions.numel()
    if rows * cols > 1:
        assert layout.tiles == (rows, cols)
        assert [view.tile for view in layout.views[:-1]] == [(r, c) for r in range(rows) for c in range(cols)]
        assert (layout.views[-1].kind, layout.views[-1].offset) == ("global", rows * cols * TOKENS_PER_TILE)


def test_a_layout_that_disagrees_with_the_processor_raises(wrapper):
    square, wide = _picture(0, (224, 224)), _picture(1, (336, 112))
    inputs = wrapper.encode([wrapper.chat_prompt(1, "Describe.")], [square])
    with pytest.raises(ValueError, match=r"image 0 \(336x112\).*gives 64 visual tokens but the processor wrote 80"):
        wrapper.image_layouts(inputs["input_ids"], [wide])


def test_without_cropping_every_image_is_one_tile(wrapper):
    single = InternVL(wrapper.model_path, dtype="float32", max_new_tokens=4, crop_to_patches=False)
    inputs = single.encode([single.chat_prompt(1, "Describe.")], [_picture(0, (448, 224))])
    assert inputs["image_layouts"] == [[ImageLayout.grid(4, 4)]]
    assert inputs["pixel_values"].shape[0] == 1


def test_batch_is_left_padded_with_one_layout_list_per_prompt(wrapper):
    prompts = [wrapper.chat_prompt(1, "Colour?"), wrapper.chat_prompt(1, "What is in the picture, in detail?")]
    inputs = wrapper.encode(prompts, [_picture(0, (112, 112)), _picture(1, (224, 224))])
    mask = inputs["attention_mask"]
    assert mask[0, 0] == 0 and bool(mask[0, -1]) and bool(mask[1].all())
    cue = wrapper.processor.tokenizer("<|im_start|>assistant\n")["input_ids"]
    assert [row[-len(cue):].tolist() for row in inputs["input_ids"]] == [cue, cue]
    assert [[layout.n_tokens for layout in row] for row in inputs["image_layouts"]] == [[16], [80]]
    assert inputs["pixel_values"].shape[0] == 1 + 5


def test_generate_answers_and_records_its_cost(wrapper, tmp_path):
    answer = wrapper.generate(_message(tmp_path, [(224, 224)]))
    assert isinstance(answer, str)
    stats = wrapper.stats
    assert (stats.visual_tokens, stats.kept_visual_tokens) == (80, 80)
    assert 0 < stats.new_tokens <= 4 and stats.prompt_tokens > 80
    assert stats.prefill_flops == stats.prefill_flops_unpruned > 0
    assert wrapper.grounding_frame == "norm1000"


def test_two_images_in_one_message(wrapper, tmp_path):
    message = _message(tmp_path, [(336, 112), (112, 112)], "Which is wider?")
    inputs = wrapper.build_inputs(message, None)
    assert [[layout.tiles for layout in row] for row in inputs["image_layouts"]] == [[(1, 3), None]]
    assert isinstance(wrapper.generate(message), str)
    assert wrapper.stats.visual_tokens == 64 + 16


def test_random_pruning_keeps_fewer_visual_tokens(wrapper, tmp_path):
    try:
        wrapper.set_method("random", ratio=0.5, layer=2)
        answer = wrapper.generate(_message(tmp_path, [(224, 224)]))
    finally:
        wrapper.set_method("none")
    assert isinstance(answer, str)
    assert wrapper.stats.kept_visual_tokens < wrapper.stats.visual_tokens == 80
    assert wrapper.stats.prefill_flops < wrapper.stats.prefill_flops_unpruned


def test_an_internvl3_5_checkpoint_with_a_qwen3_decoder_loads_and_prunes_exactly(tmp_path):
    # InternVL3.5-HF is the same class with a Qwen3 decoder (QK-norm, explicit head_dim): the adapter and the engine
    # take it unchanged.
    path = build(tmp_path / "tiny-internvl3_5", text_model_type="qwen3")
    wrapper = InternVL(str(path), dtype="float32", max_new_tokens=4)
    assert type(wrapper.model.model.language_model).__name__ == "Qwen3Model"
    prompt = wrapper.chat_prompt(1, "Describe.")
    inputs = wrapper.encode([prompt], [_picture(0, (224, 224))])
    layouts = inputs.pop("image_layouts")
    model = wrapper.model
    with prune(model, "ivc_prune", ratio=0.5, layer=2) as pruner:
        pruner.set_image_layouts(layouts)
        out = greedy_generate(model, inputs, 4)
        pruner.set_image_layouts(layouts)
        with torch.no_grad():
            prefill = model(**inputs).logits
    assert len(pruner.last.kept[0]) == 40
    n_layers = model.config.text_config.num_hidden_layers
    alive = alive_per_layer(inputs["input_ids"], model.config.image_token_id, [2], pruner.last.stages, n_layers)
    check_pruned_run(model, inputs, prefill, out, alive, [alive[-1]] * n_layers, "sdpa")
