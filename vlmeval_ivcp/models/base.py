"""The VLMEvalKit-style model wrapper every family adapter builds on.

A wrapper loads a stock transformers checkpoint, optionally attaches a pruning method (by name, ratio, layer), and
answers `generate(message, dataset=None) -> str` greedily, one message at a time, as VLMEvalKit calls it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from transformers import AutoTokenizer

from ..evaluation.efficiency import FirstTokenTimer, kv_cache_bytes, prefill_flops, pruned_layer_lengths
from ..pruning import Pruner, prune

Message = list[dict[str, str]]

DTYPES = {
    "auto": "auto",
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class GenerationStats:
    """What the last `generate` call cost (filled by the wrapper, read by the runner)."""

    prompt_tokens: int = 0
    visual_tokens: int = 0
    kept_visual_tokens: int = 0
    new_tokens: int = 0
    select_seconds: float = 0.0
    prefill_seconds: float = 0.0
    generate_seconds: float = 0.0
    kv_cache_bytes: int = 0
    prefill_flops: int = 0
    prefill_flops_unpruned: int = 0
    kept_visual: list[int] = field(default_factory=list)


def split_message(message: Message) -> tuple[list[str], list[str]]:
    """Image paths and text pieces of a VLMEvalKit message, checking its shape."""
    if not isinstance(message, list) or not message:
        raise TypeError(f"a message is a non-empty list of {{'type', 'value'}} dicts, got {message!r}")
    images, texts = [], []
    for position, item in enumerate(message):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "image":
            images.append(item["value"])
        elif kind == "text":
            texts.append(item["value"])
        else:
            raise ValueError(f"message item {position} must have type 'text' or 'image', got {item!r}")
    return images, texts


def image_only(processor_class: type) -> type:
    """`processor_class` (whose third argument is its video processor) built without a video processor: video
    processors need torchvision, absent on the CPU path, and this project feeds images only."""

    class ImageOnly(processor_class):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    ImageOnly.__name__ = ImageOnly.__qualname__ = f"ImageOnly{processor_class.__name__}"
    ImageOnly.__doc__ = f"{processor_class.__name__} without its video processor (images only, no torchvision)."
    return ImageOnly


def shipped_chat_template(processor_class: type, model_path: str, tokenizer: Any) -> str | None:
    """The checkpoint's own chat template: the processor's (chat_template.jinja or the legacy chat_template.json),
    else the tokenizer's, else None."""
    processor_dict, _ = processor_class.get_processor_dict(model_path)
    template = processor_dict.get("chat_template") or tokenizer.chat_template
    # A folder may ship several named templates; the unnamed one is "default".
    return template.get("default") if isinstance(template, dict) else template


class PrunedVLM(ABC):
    """Base of the family adapters.

    Args:
        model_path (`str`): hub id or local folder of a transformers checkpoint.
        method (`str`): registered pruning method (`"none"` for the unpruned model).
        ratio, layer: the method's retention ratio and selection layer K (method defaults when omitted).
        method_options (`dict`): further options of the method's config.
        attn_implementation (`str`): "sdpa", "eager" or "flash_attention_2".
        dtype (`str`): "auto", "float32", "bfloat16", "float16" or "float64" (exactness tests).
        device_map (`str` or `dict`): passed to `from_pretrained` ("auto" spreads a big model over the GPUs).
        max_new_tokens (`int`): generation budget per answer.
    """

    is_api = False
    INTERLEAVE = True
    # The box convention of the family's grounding answers (a frame of vlmeval_ivcp.evaluation.grounding.FRAMES).
    grounding_frame: str | None = None

    def __init__(
        self,
        model_path: str,
        method: str = "none",
        ratio: float | None = None,
        layer: int | None = None,
        method_options: dict[str, Any] | None = None,
        attn_implementation: str = "sdpa",
        dtype: str = "auto",
        device_map: str | dict | None = None,
        max_new_tokens: int = 512,
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.model_path = str(model_path)
        self.max_new_tokens = int(max_new_tokens)
        self.model, self.processor = self.load(self.model_path, attn_implementation, DTYPES[dtype], device_map)
        self.model.eval()
        self.pruner: Pruner | None = None
        self.set_method(method, ratio=ratio, layer=layer, **(method_options or {}))
        self.stats = GenerationStats()

    def set_method(self, method: str, ratio: float | None = None, layer: int | None = None, **options: Any) -> None:
        """Switch the pruning method (the weights stay loaded; `"none"` runs the unpruned model)."""
        if self.pruner is not None:
            self.pruner.remove()
            self.pruner = None
        if ratio is not None:
            options["ratio"] = ratio
        if layer is not None:
            options["layer"] = layer
        if method != "none":
            self.pruner = prune(self.model, method, **options)
        self.method = method

    def use_custom_prompt(self, dataset: str | None) -> bool:
        """VLMEvalKit's question: no prompts of our own, every benchmark is asked with the dataset's prompt."""
        return False

    def set_dump_image(self, dump_image: Any) -> None:
        """VLMEvalKit hands every local model the dataset's image writer; our messages already carry the image
        paths, so it is not needed."""

    @abstractmethod
    def load(self, model_path: str, attn_implementation: str, dtype: Any, device_map: Any) -> tuple[Any, Any]:
        """Load (model, processor) with `from_pretrained`."""

    @staticmethod
    def load_model_and_tokenizer(
        model_class: type, model_path: str, attn_implementation: str, dtype: Any, device_map: Any
    ) -> tuple[Any, Any]:
        """A stock transformers model and its tokenizer (left padding, as batched generation needs)."""
        model = model_class.from_pretrained(
            model_path, dtype=dtype, attn_implementation=attn_implementation, device_map=device_map
        )
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        tokenizer.padding_side = "left"
        return model, tokenizer

    @abstractmethod
    def chat_prompt(self, images: int, text: str) -> str:
        """The family's chat format for one user turn holding `images` images and `text`."""

    def template_prompt(self, images: int, text: str) -> str | None:
        """One user turn (images first, then the text) through the processor's chat template; None without one."""
        if getattr(self.processor, "chat_template", None) is None:
            return None
        content = [{"type": "image"}] * images + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def processor_images(self, prompts: list[str], images: list[Image.Image]) -> list[Any]:
        """The images as the processor takes them: the flat list by default (in prompt order)."""
        return images

    def processor_options(self, dataset: str | None) -> dict[str, Any]:
        """Extra processor arguments for images of `dataset` (e.g. a pixel budget); none by default."""
        return {}

    def encode(self, prompts: list[str], images: list[Image.Image], dataset: str | None = None) -> dict[str, Any]:
        """Processor outputs for a batch of prompts (left-padded), pixel values in the model's dtype.

        The dict may also hold `"image_layouts"`: per prompt, the `ImageLayout` of each of its images, for families
        whose forward inputs do not carry the tiling (the engine's layout-aware methods read it).
        """
        inputs = self.processor(
            text=prompts,
            images=self.processor_images(prompts, images) or None,
            padding=True,
            return_tensors="pt",
            **self.processor_options(dataset),
        ).data
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def build_inputs(self, message: Message, dataset: str | None) -> dict[str, Any]:
        """Turn one VLMEvalKit message into model inputs (the family's chat format, images first)."""
        image_paths, texts = split_message(message)
        images = [Image.open(path).convert("RGB") for path in image_paths]
        return self.encode([self.chat_prompt(len(images), "\n".join(texts))], images, dataset)

    def decode(self, token_ids: torch.Tensor) -> str:
        return self.processor.tokenizer.decode(token_ids, skip_special_tokens=True).strip()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.inference_mode()
    def generate(self, message: Message, dataset: str | None = None) -> str:
        inputs = self.build_inputs(message, dataset)
        layouts = inputs.pop("image_layouts", None)
        if self.pruner is not None:
            self.pruner.set_image_layouts(layouts)
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        prompt_len = inputs["input_ids"].shape[1]
        prefill_kv: list[int] = []
        # The top-level forward returns after the engine's hooks, so the cache is already trimmed; the first call is
        # the prefill.
        probe = self.model.register_forward_hook(
            lambda module, args, kwargs, out: None if prefill_kv else prefill_kv.append(
                kv_cache_bytes(out.cache)),
            with_kwargs=True,
        )
        timer = FirstTokenTimer()
        start = time.perf_counter()
        try:
            output = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, streamer=timer
            )
        finally:
            probe.remove()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        new_tokens = output[0, prompt_len:]
        image_id = self.model.config.image_token_id
        n_visual = int((inputs["input_ids"] == image_id).sum())
        record = self.pruner.last if self.pruner is not None else None
        kept = record.kept[0].tolist() if record is not None else list(range(n_visual))
        n_layers = self.model.config.get_text_config().num_hidden_layers
        unpruned = [prompt_len] * n_layers
        computed = (
            pruned_layer_lengths(record, self.pruner.config.cuts(), prompt_len, n_layers)
            if record is not None
            else unpruned
        )
        self.stats = GenerationStats(
            prompt_tokens=prompt_len,
            visual_tokens=n_visual,
            kept_visual_tokens=len(kept),
            new_tokens=int(new_tokens.numel()),
            select_seconds=record.select_seconds if record is not None else 0.0,
            prefill_seconds=timer.seconds,
            generate_seconds=time.perf_counter() - start,
            kv_cache_bytes=prefill_kv[0],
            prefill_flops=prefill_flops(self.model.config, computed),
            prefill_flops_unpruned=prefill_flops(self.model.config, unpruned),
            kept_visual=kept,
        )
        return self.decode(new_tokens)
