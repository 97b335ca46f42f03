"""Tiny random-weight InternVL checkpoint (the transformers-native `InternVLForConditionalGeneration` layout)."""

from __future__ import annotations

from pathlib import Path

from . import TINY_VISION_WIDTHS, byte_level_tokenizer, chat_text_config, random_model

INTERNVL_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"
)
# The names under which InternVLProcessor reads the image tokens from the tokenizer.
INTERNVL_TOKEN_ATTRIBUTES = dict(
    start_image_token="<img>", end_image_token="</img>", context_image_token="<IMG_CONTEXT>", video_token="<video>"
)
TILE_SIZE = 112
PATCH_SIZE = 14
MAX_TILES = 4


def build(path: str | Path, seed: int = 0, num_layers: int = 4, text_model_type: str = "qwen2") -> Path:
    """Write a tiny InternVL checkpoint to `path` (created) and return it.

    Text (Qwen2 as InternVL2.5/3, or with `text_model_type="qwen3"` Qwen3 as InternVL3.5: QK-norm, explicit
    `head_dim`): hidden 64, 4 heads of 16 (2 KV heads); vision (InternViT): 2 layers of width 32 on 112x112 tiles
    in 14-pixel patches, an 8x8 grid that the 0.5 pixel shuffle folds into 4x4 = 16 visual tokens per tile. The saved
    image processor tiles dynamically into at most 4 tiles plus a thumbnail.
    """
    from transformers import InternVLConfig, InternVLForConditionalGeneration, Qwen2Tokenizer
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(
        Qwen2Tokenizer,
        INTERNVL_SPECIAL_TOKENS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        **INTERNVL_TOKEN_ATTRIBUTES,
    )
    token = tokenizer.convert_tokens_to_ids
    downsample_ratio = 0.5
    tokens_per_tile = int((TILE_SIZE // PATCH_SIZE * downsample_ratio) ** 2)
    config = InternVLConfig(
        text_config=chat_text_config(
            tokenizer,
            num_layers,
            model_type=text_model_type,
            # Qwen3's config defaults to head_dim 128 instead of deriving it from the widths.
            **({"head_dim": 16} if text_model_type == "qwen3" else {}),
        ),
        vision_config=dict(**TINY_VISION_WIDTHS, image_size=TILE_SIZE, patch_size=PATCH_SIZE),
        image_token_id=token("<IMG_CONTEXT>"),
        image_seq_length=tokens_per_tile,
        downsample_ratio=downsample_ratio,
    )
    model = random_model(InternVLForConditionalGeneration, config, seed, "vision_tower", token("<|im_end|>"),
                          tokenizer.pad_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    GotOcr2ImageProcessorPil(
        size={"height": TILE_SIZE, "width": TILE_SIZE},
        image_mean=IMAGENET_DEFAULT_MEAN,  # InternViT's normalisation, as in the released checkpoints
        image_std=IMAGENET_DEFAULT_STD,
        crop_to_patches=True,
        min_patches=1,
        max_patches=MAX_TILES,
    ).save_pretrained(path)
    return path
