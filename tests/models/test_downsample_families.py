"""`downsample` in every family's wrapper (but LLaVA-1.5, where it is refused): the achieved count is what the model
makes and keeps, the full-resolution count is the unpruned run's. Counts measured on the tiny checkpoints for one
448x336 picture (the Qwen ones also worked out by hand), pinned so that a change of the rule shows."""

from __future__ import annotations

import pytest

from support.tiny import picture, tiny_wrapper

from vlmeval_ivcp.models.base import PrunedVLM

# family -> visual tokens at full size, at label 0.25 (224x168) and at label 0.01 (44x33)
COUNTS = {
    # 64-token budget: 448x336 is over it (6 x 9 = 54), 224x168 is 6 x 8 = 48 within it; 44x33 rounds to 28x56,
    # under the 4-token minimum, and scales up to 2 x 3.
    "qwen2_5_vl": (54, 48, 6),
    "qwen2_vl": (54, 48, 6),
    "qwen3_vl": (54, 35, 6),
    # The base view plus the pinpoint grid with its newlines: the same pinpoint at full size and halved, a smaller
    # one at a tenth.
    "llava_next": (70, 70, 36),
    "llava_onevision": (156, 156, 36),
    # The tiling follows the aspect ratio first: 4:3 takes 4 x 3 tiles and the thumbnail (13 x 16) at any size.
    "internvl": (208, 208, 208),
    "deepseek_vl2": (27, 27, 17),
}


@pytest.mark.parametrize("family", sorted(COUNTS))
def test_downsample_records_achieved_and_full_resolution_counts(tmp_path, family):
    path = tmp_path / "picture.png"
    picture(0, (448, 336)).save(path)
    message = [{"type": "image", "value": str(path)}, {"type": "text", "value": "What?"}]
    wrapper = tiny_wrapper(family=family)
    full, half, tenth = COUNTS[family]
    try:
        wrapper.generate(message)
        assert wrapper.stats.visual_tokens == wrapper.stats.full_visual_tokens == full
        for ratio, achieved in ((0.25, half), (0.01, tenth)):
            wrapper.set_method("downsample", ratio=ratio)
            assert wrapper.pruner is None
            wrapper.generate(message)
            counts = (wrapper.stats.visual_tokens, wrapper.stats.kept_visual_tokens, wrapper.stats.full_visual_tokens)
            assert counts == (achieved, achieved, full)
    finally:
        wrapper.set_method("none")


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "qwen3_vl"])
def test_the_qwen_full_count_from_the_grid_equals_the_processors(family):
    wrapper = tiny_wrapper(family=family)
    sizes = [[(448, 336)], [(13, 900), (2000, 120)], [(50, 50), (640, 480), (97, 301)]]
    for dataset in (None, "DemoMCQ"):
        images = [[wrapper.fit_image(picture(index, size), dataset) for index, size in enumerate(row)] for row in sizes]
        prompts = [wrapper.chat_prompt(len(row), "What?") for row in sizes]
        from_grid = wrapper.full_visual_tokens(prompts, images, dataset)
        assert from_grid == PrunedVLM.full_visual_tokens(wrapper, prompts, images, dataset)  # the processor's count
        assert len(set(from_grid)) == len(sizes)
