"""DeepSeek-VL2 assembled from transformers' stock parts: the SigLIP vision tower (`SiglipVisionModel`) and the
DeepSeek-V2 MoE decoder (`DeepseekV2Model` with MLA; `DeepseekOcr2TextModel` for the plain-attention variant, see
`configuration.py`). Only the glue is ours: the 2x2-merge MLP projector, the row newline and view-separator
embeddings, and the placement of the image features on the `<image>` tokens.

Token layout of one image (`tile_tag="2D"`, `global_view_pos="head"`), with `h = w` cells per view side:
the global view as `h` rows of `w` cells each followed by the newline embedding, one view-separator embedding,
then all local tiles side by side as `th*h` rows of `tw*w` cells, each row followed by the newline embedding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    DeepseekOcr2TextConfig,
    DeepseekOcr2TextModel,
    DeepseekV2Config,
    DeepseekV2Model,
    GenerationMixin,
    PreTrainedModel,
    SiglipVisionModel,
)
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from .checkpoint import IGNORED_OFFICIAL_KEYS, register_official_key_mapping
from .configuration import DeepseekVL2Config

# The stock decoder for each kind of derived text config.
LANGUAGE_MODELS: dict[type, type[PreTrainedModel]] = {
    DeepseekV2Config: DeepseekV2Model,
    DeepseekOcr2TextConfig: DeepseekOcr2TextModel,
}


class DeepseekVL2Projector(nn.Module):
    """The official `downsample_mlp_gelu` projector: each `r x r` block of patch features (the patch grid zero-padded
    at the bottom and right to a multiple of `r`) is concatenated channel-major, as `F.unfold` orders it, then an
    MLP with exact GELU maps it to the language model's width.

    Args:
        input_dim (`int`): vision feature width.
        n_embed (`int`): language model width.
        depth (`int`): linear layers in the MLP (official default 2).
        mlp_ratio (`int`): hidden width is `n_embed * mlp_ratio`.
        downsample_ratio (`int`): `r`, the side of the merged block.
    """

    def __init__(self, input_dim: int, n_embed: int, depth: int, mlp_ratio: int, downsample_ratio: int, **_: Any):
        super().__init__()
        self.ratio = downsample_ratio
        hidden = n_embed * mlp_ratio
        modules: list[nn.Module] = [nn.Linear(input_dim * downsample_ratio**2, hidden)]
        for _ in range(depth - 2):
            modules += [nn.GELU(), nn.Linear(hidden, hidden)]
        modules += [nn.GELU(), nn.Linear(hidden, n_embed)]
        self.layers = nn.Sequential(*modules)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`[V, side*side, C]` patch features of V square views -> `[V, cells*cells, n_embed]`."""
        views, n_patches, channels = features.shape
        side = math.isqrt(n_patches)
        grid = features.transpose(1, 2).reshape(views, channels, side, side)
        pad = -side % self.ratio
        grid = F.pad(grid, (0, pad, 0, pad))
        merged = F.unfold(grid, kernel_size=self.ratio, stride=self.ratio)  # [V, C*r*r, cells*cells]
        return self.layers(merged.transpose(1, 2))


class DeepseekVL2PreTrainedModel(PreTrainedModel):
    config_class = DeepseekVL2Config
    config: DeepseekVL2Config
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SiglipEncoderLayer", "DeepseekV2DecoderLayer", "DeepseekOcr2TextDecoderLayer"]
    _keys_to_ignore_on_load_unexpected = list(IGNORED_OFFICIAL_KEYS)
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DeepseekVL2Model):
            # As the official model initialises them: normal with std 1/sqrt(n_embed).
            std = module.image_newline.shape[0] ** -0.5
            module.image_newline.normal_(0.0, std)
            module.view_separator.normal_(0.0, std)


class DeepseekVL2Model(DeepseekVL2PreTrainedModel):
    """Vision tower, projector, newline / view-separator embeddings and the stock decoder (`language_model`).

    `forward` embeds the tokens, writes each image's features (in the layout of the module doc) over its `<image>`
    tokens (`config.image_token_id`) and runs `language_model` on the embeddings.
    """

    def __init__(self, config: DeepseekVL2Config):
        super().__init__(config)
        projector = config.projector
        self.vision_tower = SiglipVisionModel(config.vision_tower_config)
        self.projector = DeepseekVL2Projector(**projector)
        self.image_newline = nn.Parameter(torch.empty(projector["n_embed"]))
        self.view_separator = nn.Parameter(torch.empty(projector["n_embed"]))
        self.language_model = LANGUAGE_MODELS[type(config.text_config)](config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def _with_row_newlines(self, grid: torch.Tensor) -> torch.Tensor:
        """`[rows, cols, D]` -> `[rows * (cols + 1), D]`: the newline embedding after each row."""
        newline = self.image_newline.to(grid.dtype).expand(grid.shape[0], 1, -1)
        return torch.cat([grid, newline], dim=1).flatten(0, 1)

    def get_image_features(self, pixel_values: torch.Tensor, images_spatial_crop: torch.Tensor) -> torch.Tensor:
        """The image-token embeddings of a batch's images, in order.

        Args:
            pixel_values (`FloatTensor [V, 3, S, S]`): every view of every image: per image its global view, then its
                local tiles in raster order.
            images_spatial_crop (`LongTensor [I, 2]`): per image (width tiles, height tiles), the official order.

        Returns:
            `FloatTensor [n_tokens, D]`: per image, its tokens in the layout of the module doc, concatenated.
        """
        tower_dtype = self.vision_tower.embeddings.patch_embedding.weight.dtype
        patches = self.vision_tower(pixel_values.to(tower_dtype)).last_hidden_state
        cells = self.projector(patches)  # [V, side*side, D]
        side, width = math.isqrt(cells.shape[1]), cells.shape[2]
        tilings = [tuple(tiling) for tiling in images_spatial_crop.tolist()]
        expected_views = sum(1 + width_tiles * height_tiles for width_tiles, height_tiles in tilings)
        if expected_views != cells.shape[0]:
            raise ValueError(
                f"images_spatial_crop {tilings} describes {expected_views} views, pixel_values holds {cells.shape[0]}"
            )
        separator = self.view_separator.to(cells.dtype)[None]
        images, view = [], 0
        for width_tiles, height_tiles in tilings:
            global_view = self._with_row_newlines(cells[view].view(side, side, width))
            tiles = cells[view + 1 : view + 1 + width_tiles * height_tiles]
            # (th tw) (h w) d -> (th h) (tw w) d: the tiles side by side as one grid of cells.
            local = tiles.view(height_tiles, width_tiles, side, side, width).permute(0, 2, 1, 3, 4)
            local = self._with_row_newlines(local.reshape(height_tiles * side, width_tiles * side, width))
            views = [global_view, separator, local] if self.config.global_view_pos == "head" else [
                local, separator, global_view]
            images.append(torch.cat(views))
            view += 1 + width_tiles * height_tiles
        return torch.cat(images)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        images_spatial_crop: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("DeepseekVL2Model needs exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            inputs_embeds = self._place_image_features(input_ids, inputs_embeds, pixel_values, images_spatial_crop)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )

    def _place_image_features(
        self, input_ids: torch.LongTensor | None, embeds: torch.Tensor, pixel_values: torch.Tensor,
        images_spatial_crop: torch.LongTensor | None,
    ) -> torch.Tensor:
        if input_ids is None or images_spatial_crop is None or self.config.image_token_id is None:
            raise ValueError(
                "placing image features needs input_ids, images_spatial_crop and config.image_token_id (the "
                "<image> token id: pass image_token_id=processor.image_token_id to from_pretrained)"
            )
        features = self.get_image_features(pixel_values, images_spatial_crop).to(embeds.dtype)
        image_tokens = input_ids == self.config.image_token_id
        if int(image_tokens.sum()) != features.shape[0]:
            raise ValueError(
                f"the prompts hold {int(image_tokens.sum())} <image> tokens but the images give {features.shape[0]} "
                "features: the image token counts of the processor and the tiling disagree"
            )
        # Row-major over the batch: the images of each prompt, prompts in batch order, as the processor lists them.
        return embeds.masked_scatter(image_tokens[..., None].to(embeds.device), features)


class DeepseekVL2ForCausalLM(DeepseekVL2PreTrainedModel, GenerationMixin):
    """DeepSeek-VL2 with its language-model head; loads the official checkpoints (see `checkpoint.py`).

    `from_pretrained(folder, image_token_id=...)` reads the official `config.json` and weights as they are;
    `save_pretrained` writes them back in the official layout.
    """

    _tied_weights_keys: dict[str, str] = {}

    def __init__(self, config: DeepseekVL2Config):
        super().__init__(config)
        self.model = DeepseekVL2Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()
        # transformers applies conversion mappings to models outside the library only once they are registered;
        # `from_pretrained` builds the model before it reads the weights, so this covers loading too.
        register_official_key_mapping(
            type(self).__name__, merge_experts=not isinstance(self.model.language_model, DeepseekV2Model)
        )

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        images_spatial_crop: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits for the prompt (`[B, S, vocab]`, or the last `logits_to_keep` positions). `pixel_values` and
        `images_spatial_crop` come from `DeepseekVL2Processor` and are only needed at prefill."""
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            images_spatial_crop=images_spatial_crop,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return CausalLMOutputWithPast(
            logits=self.lm_head(hidden[:, keep]),
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
