"""The LLaVA-NeXT adapter on its tiny checkpoint: chat format, anyres token counts, batches, answers, pruning."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from support.tiny import picture

from vlmeval_ivcp.models.llava import llava_chat_prompt
from vlmeval_ivcp.models.llava_next import LlavaNext
from vlmeval_ivcp.models.tiny import tiny_checkpoint
from vlmeval_ivcp.models.tiny.llava_next import VICUNA_CHAT_TEMPLATE

# (width, height) of a picture -> (rows, columns) of 56-pixel tiles the best pinpoint gives it.
TILINGS = {
    (56, 56): (1, 1),
    (112, 112): (2, 2),
    (112, 56): (1, 2),
    (56, 112): (2, 1),
    (90, 70): (2, 2),  # letterboxed: 6 of the 8 patch rows hold the picture
    (300, 100): (1, 2),  # letterboxed: 2 of the 4 patch rows hold the picture
}
MISTRAL_STYLE_TEMPLATE = (
    "{% for message in messages %}[INST] "
    "{% for item in message['content'] if item['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ item['text'] }}{% endfor %}"
    " [/INST]{% endfor %}"
)
LAYER = 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint("llava_next", tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="module")
def wrapper(checkpoint):
    return LlavaNext(str(checkpoint), dtype="float32", max_new_tokens=4)


def expected_image_tokens(config, size: tuple[int, int], tiles: tuple[int, int]) -> int:
    """Counted from the config alone: the base view's patch grid, the tiles' patch grid less the rows (or columns)
    that only hold letterbox padding, and one newline token per remaining row."""
    side = config.vision_config.image_size // config.vision_config.patch_size
    width, height = size
    rows, cols = tiles[0] * side, tiles[1] * side
    if width * rows > height * cols:  # wider than the tiling: padded above and below
        rows -= 2 * ((rows - int(height * cols / width)) // 2)
    else:
        cols -= 2 * ((cols - int(width * rows / height)) // 2)
    return side * side + rows * cols + rows


def _image_counts(wrapper, input_ids: torch.Tensor) -> list[int]:
    return (input_ids == wrapper.model.config.image_token_id).sum(dim=1).tolist()


def _message(tmp_path, sizes: list[tuple[int, int]], question: str) -> list[dict[str, str]]:
    message = []
    for index, size in enumerate(sizes):
        path = tmp_path / f"picture{index}.png"
        picture(index, size).save(path)
        message.append({"type": "image", "value": str(path)})
    return message + [{"type": "text", "value": question}]


def test_prompt_follows_the_shipped_template_with_images_first(wrapper):
    assert wrapper.processor.chat_template == VICUNA_CHAT_TEMPLATE
    assert wrapper.chat_prompt(2, "What?") == "USER: <image>\n<image>\nWhat? ASSISTANT:"
    assert wrapper.grounding_frame == "norm1"


def test_prompt_uses_whatever_template_the_checkpoint_ships(wrapper, monkeypatch):
    monkeypatch.setattr(wrapper.processor, "chat_template", MISTRAL_STYLE_TEMPLATE)
    assert wrapper.chat_prompt(1, "What?") == "[INST] <image>\nWhat? [/INST]"


def test_prompt_falls_back_to_vicuna_without_a_template(wrapper, monkeypatch):
    monkeypatch.setattr(wrapper.processor, "chat_template", None)
    assert wrapper.chat_prompt(1, "What?") == llava_chat_prompt(1, "What?") == "USER: <image>\nWhat? ASSISTANT:"


def test_prompt_reads_a_legacy_chat_template_json(checkpoint, tmp_path):
    legacy = shutil.copytree(checkpoint, tmp_path / "legacy")
    (legacy / "chat_template.jinja").unlink()
    (legacy / "chat_template.json").write_text(json.dumps({"chat_template": MISTRAL_STYLE_TEMPLATE}))
    wrapper = LlavaNext(str(legacy), dtype="float32", max_new_tokens=1)
    assert wrapper.chat_prompt(1, "What?") == "[INST] <image>\nWhat? [/INST]"


@pytest.mark.parametrize("size", list(TILINGS))
def test_image_tokens_follow_the_anyres_tiling(wrapper, size):
    tiles = TILINGS[size]
    config = wrapper.model.config
    tile_pixels = config.vision_config.image_size
    assert [tiles[0] * tile_pixels, tiles[1] * tile_pixels] in config.image_grid_pinpoints
    inputs = wrapper.encode([wrapper.chat_prompt(1, "Hi")], [picture(0, size)])
    assert _image_counts(wrapper, inputs["input_ids"]) == [expected_image_tokens(config, size, tiles)]
    # The base view, then the tiles.
    assert inputs["pixel_values"].shape[1] == 1 + tiles[0] * tiles[1]


def test_batch_is_left_padded_and_same_size_pictures_give_equal_counts(wrapper):
    prompts = [wrapper.chat_prompt(1, "Hi"), wrapper.chat_prompt(1, "A much longer question about the picture?")]
    inputs = wrapper.encode(prompts, [picture(0, (90, 70)), picture(1, (90, 70))])
    mask = inputs["attention_mask"]
    assert mask[0, 0] == 0 and mask[:, -1].tolist() == [1, 1] and mask[1].all()
    assert _image_counts(wrapper, inputs["input_ids"]) == [70, 70]
    with torch.no_grad():
        logits = wrapper.model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape


def test_pixel_values_take_the_model_dtype(checkpoint):
    half = LlavaNext(str(checkpoint), dtype="bfloat16", max_new_tokens=1)
    inputs = half.encode([half.chat_prompt(1, "Hi")], [picture(0, (90, 70))])
    assert inputs["pixel_values"].dtype == torch.bfloat16


def test_wrapper_answers_a_message_and_records_its_cost(wrapper, tmp_path):
    answer = wrapper.generate(_message(tmp_path, [(90, 70)], "What is in the picture?"))
    assert isinstance(answer, str)
    assert (wrapper.stats.visual_tokens, wrapper.stats.kept_visual_tokens) == (70, 70)
    assert wrapper.stats.prompt_tokens > 70 and 1 <= wrapper.stats.new_tokens <= 4
    assert wrapper.stats.prefill_flops == wrapper.stats.prefill_flops_unpruned


def test_two_pictures_in_one_message(wrapper, tmp_path):
    answer = wrapper.generate(_message(tmp_path, [(56, 56), (112, 56)], "Which differs?"))
    assert isinstance(answer, str)
    assert wrapper.stats.visual_tokens == 36 + 52


def test_pruning_keeps_fewer_visual_tokens(wrapper, tmp_path):
    message = _message(tmp_path, [(90, 70)], "What is in the picture?")
    try:
        wrapper.set_method("random", ratio=0.5, layer=LAYER)
        answer = wrapper.generate(message)
    finally:
        wrapper.set_method("none")
    assert isinstance(answer, str)
    assert wrapper.stats.kept_visual_tokens < wrapper.stats.visual_tokens == 70
    assert wrapper.stats.prefill_flops < wrapper.stats.prefill_flops_unpruned
