"""The VLMEvalKit-style model wrapper every family adapter builds on.

A wrapper loads a stock transformers checkpoint, optionally attaches a pruning method (by name, ratio, layer) or
applies an input-side method to every picture before its processor (`downsample`), and answers
`generate(message, dataset=None) -> str` greedily, one message at a time, as VLMEvalKit calls it, or
`generate_batch(messages, dataset=None) -> list[str]` several at once (left-padded, through the same path).
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import torch
from PIL import Image
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList

from ..evaluation.efficiency import (
    FirstTokenTimer,
    kv_bytes_per_token,
    prefill_flops,
    pruned_layer_lengths,
    row_kv_cache_bytes,
)
from ..pruning import Pruner, PruneConfig, get_method, make_config, prune
from ..pruning.registry import ImageFn
from .prompts import CustomPrompts, dataset_type
from .load_error import load_error

Message = list[dict[str, str]]
# Threads that load a batch's pictures: the cores this process may use.
IMAGE_THREADS = len(os.sched_getaffinity(0))

DTYPES = {
    "auto": "auto",
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class GenerationStats:
    """What one answer cost (filled by the wrapper, read by the runner).

    Token counts, KV bytes and FLOPs are the row's own (as at batch size 1: no padding); `prefill_seconds` (time to
    first token) and `generate_seconds` are those of the whole batch of `batch_size` rows it was answered in;
    `select_seconds` is the batch's selection time shared equally among its rows. `decision_margin` is the smallest
    gap between the two highest logits over the row's greedy steps (how close a step came to another token).
    `full_visual_tokens` is what the unchanged pictures give: `visual_tokens` unless an input-side method
    (`downsample`) made them smaller; `prefill_flops_unpruned` is the prefill of the prompt with that many visual
    tokens, so kept shares and FLOPs ratios compare with the full-resolution, unpruned run.
    """

    prompt_tokens: int = 0
    visual_tokens: int = 0
    full_visual_tokens: int = 0
    kept_visual_tokens: int = 0
    new_tokens: int = 0
    select_seconds: float = 0.0
    prefill_seconds: float = 0.0
    generate_seconds: float = 0.0
    kv_cache_bytes: int = 0
    prefill_flops: int = 0
    prefill_flops_unpruned: int = 0
    kept_visual: list[int] = field(default_factory=list)
    batch_size: int = 1
    decision_margin: float = float("inf")


class MarginTracker(LogitsProcessor):
    """Notes, per greedy step, the gap between each row's two highest (processed) logits; changes nothing."""

    def __init__(self) -> None:
        self.margins: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        top = scores.float().topk(2, dim=-1).values
        self.margins.append((top[:, 0] - top[:, 1]).cpu())
        return scores

    def smallest(self, row: int, steps: int) -> float:
        """The row's smallest margin over its first `steps` steps."""
        return min((float(margin[row]) for margin in self.margins[:steps]), default=float("inf"))


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


def on_threads(function: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """`function` of each item, in order. A batch's pictures are decoded and resized on several threads (Pillow
    releases the GIL there): done one after another they are the largest per-row cost a batch does not share
    (docs/efficiency.md, throughput)."""
    if len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(len(items), IMAGE_THREADS)) as pool:
        return list(pool.map(function, items))


def input_method_problem(wrapper_class: type, method: str) -> str | None:
    """Why input-side method `method` cannot run on `wrapper_class` (None when it can): a family whose visual-token
    count does not follow the picture's size (LLaVA-1.5's fixed 336-pixel input) has no downsampling baseline."""
    if wrapper_class.tokens_follow_picture_size:
        return None
    return (
        f"{method} changes the pictures' size, but {wrapper_class.__name__} makes {wrapper_class.fixed_visual_tokens} "
        f"visual tokens whatever the size: the baseline does not exist there (N/A, docs/methods/{method}.md)"
    )


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
        use_custom_prompt (`bool`): ask benchmarks with the family's own prompts (`custom_prompts`, VLMEvalKit's
            model-class prompts) where it has one, instead of the dataset's; refused for a family without them.
    """

    is_api = False
    INTERLEAVE = True
    # The box convention of the family's grounding answers (a frame of vlmeval_ivcp.evaluation.grounding.FRAMES).
    grounding_frame: str | None = None
    # The family's model-specific prompts (VLMEvalKit's `build_prompt` of its model class), if any.
    custom_prompts: CustomPrompts | None = None
    # Where the processor puts each view's grid on the picture, for vlmeval_ivcp.visualize: "stretch" (the view is
    # the whole picture resized), "crop" (a centred crop) or "pad" (the picture padded to the grid's shape).
    view_fit = "stretch"
    # Whether the number of visual tokens follows the picture's size; a family with a fixed input size sets False and
    # its count in `fixed_visual_tokens` (an input-side method such as `downsample` is refused there).
    tokens_follow_picture_size = True
    fixed_visual_tokens: int | None = None

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
        use_custom_prompt: bool = False,
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not isinstance(use_custom_prompt, bool):
            raise ValueError(f"use_custom_prompt must be true or false, got {use_custom_prompt!r}")
        if use_custom_prompt and self.custom_prompts is None:
            raise ValueError(f"use_custom_prompt: {type(self).__name__} has no model-specific prompts")
        self._use_custom_prompt = use_custom_prompt
        self._dump_image: Any = None
        self.model_path = str(model_path)
        self.max_new_tokens = int(max_new_tokens)
        try:
            self.model, self.processor = self.load(self.model_path, attn_implementation, DTYPES[dtype], device_map)
        except OSError as error:  # the hub's and transformers' missing, offline, gated and unreadable checkpoints
            raise load_error(self.model_path, error) from error
        self.model.eval()
        self.pruner: Pruner | None = None
        self.input_method: tuple[ImageFn, PruneConfig] | None = None
        self.set_method(method, ratio=ratio, layer=layer, **(method_options or {}))
        self.stats = GenerationStats()

    def set_method(self, method: str, ratio: float | None = None, layer: int | None = None, **options: Any) -> None:
        """Switch the pruning method (the weights stay loaded; `"none"` runs the unpruned model). An input-side method
        (`downsample`) attaches no pruner: `build_batch_inputs` applies it to every picture.

        Raises:
            ValueError: an input-side method on a family whose visual tokens do not follow the picture's size.
        """
        if self.pruner is not None:
            self.pruner.remove()
            self.pruner = None
        self.input_method = None
        if ratio is not None:
            options["ratio"] = ratio
        if layer is not None:
            options["layer"] = layer
        spec = None if method == "none" else get_method(method)
        if spec is not None and spec.changes_inputs:
            problem = input_method_problem(type(self), method)
            if problem:
                raise ValueError(problem)
            self.input_method = (spec.change_image, make_config(method, **options))
        elif spec is not None:
            self.pruner = prune(self.model, method, **options)
        self.method = method

    def use_custom_prompt(self, dataset: str | None) -> bool:
        """VLMEvalKit's question: whether `dataset` is asked with the family's own prompt (only when the model was
        built with `use_custom_prompt=True`)."""
        return self._use_custom_prompt and self.custom_prompts.applies(dataset, dataset_type(dataset))

    def prompt_text(self, row: Any, dataset: str) -> Message:
        """The text part of the family's own prompt for one row (images come first, added by the caller)."""
        return [{"type": "text", "value": self.custom_prompts.text(row, dataset, dataset_type(dataset))}]

    def set_dump_image(self, dump_image: Any) -> None:
        """VLMEvalKit hands every local model the dataset's image writer, for `build_prompt`."""
        self._dump_image = dump_image

    def build_prompt(self, line: Any, dataset: str) -> Message:
        """VLMEvalKit's call where `use_custom_prompt(dataset)`: the row's images (from the dataset's image writer
        given to `set_dump_image`), then `prompt_text`."""
        if self._dump_image is None:
            raise RuntimeError("build_prompt needs the dataset's image writer: call set_dump_image first")
        paths = self._dump_image(line)
        paths = [paths] if isinstance(paths, str) else list(paths)
        return [{"type": "image", "value": path} for path in paths] + self.prompt_text(line, dataset)

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
        return self.build_batch_inputs([message], dataset)

    def build_batch_inputs(self, messages: list[Message], dataset: str | None) -> dict[str, Any]:
        """Turn VLMEvalKit messages into one left-padded batch of model inputs.

        With an input-side method, each picture is changed by it between `read_image` and `fit_image`, and the
        inputs also hold `"full_visual_tokens"`: per prompt, the visual tokens of its unchanged pictures
        (`full_visual_tokens`).
        """
        prompts, paths, counts = [], [], []
        for message in messages:
            image_paths, texts = split_message(message)
            paths += image_paths
            counts.append(len(image_paths))
            prompts.append(self.chat_prompt(len(image_paths), "\n".join(texts)))
        pictures = on_threads(self.read_image, paths)
        images = on_threads(lambda picture: self.fit_image(picture, dataset), pictures)
        if self.input_method is None:
            return self.encode(prompts, images, dataset)
        bounds = list(accumulate(counts, initial=0))
        full_visual = self.full_visual_tokens(
            prompts, [images[start:end] for start, end in zip(bounds, bounds[1:])], dataset
        )
        change, config = self.input_method
        changed = on_threads(lambda picture: self.fit_image(change(picture, config), dataset), pictures)
        inputs = self.encode(prompts, changed, dataset)
        inputs["full_visual_tokens"] = full_visual
        return inputs

    def full_visual_tokens(self, prompts: list[str], images: list[list[Image.Image]], dataset: str | None) -> list[int]:
        """Per prompt, the visual tokens of its fitted pictures (`images`, per prompt), for an input-side method's
        record of the full count: by default the processor's own count, from encoding them."""
        flat = [image for row in images for image in row]
        return self.visual_token_counts(self.encode(prompts, flat, dataset)["input_ids"])

    def read_image(self, path: str) -> Image.Image:
        """One picture of a message in RGB, as the family's VLMEvalKit class reads it (`convert("RGB")` by default)."""
        with Image.open(path) as opened:
            return opened.convert("RGB")

    def fit_image(self, image: Image.Image, dataset: str | None) -> Image.Image:
        """The family's own resize before its processor (none by default; Qwen's `smart_resize`)."""
        return image

    def visual_token_counts(self, input_ids: torch.Tensor) -> list[int]:
        """Per prompt, its image tokens (separators such as LLaVA-NeXT's newlines included)."""
        return (input_ids == self.model.config.image_token_id).sum(dim=1).tolist()

    def decode(self, token_ids: torch.Tensor) -> str:
        return self.processor.tokenizer.decode(token_ids, skip_special_tokens=True).strip()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def generate(self, message: Message, dataset: str | None = None) -> str:
        """Answer one message greedily (VLMEvalKit's interface); `stats` holds what it cost."""
        return self.generate_batch([message], dataset)[0]

    @torch.inference_mode()
    def generate_batch(
        self, messages: list[Message], dataset: str | None = None, questions: list[str] | None = None
    ) -> list[str]:
        """Answer several messages greedily in one left-padded batch; `batch_stats` holds each row's costs (and
        `stats` the first row's). Rows may keep different numbers of tokens (docs/engine.md, ragged batches).

        `questions`: each row's question alone (the harness gives the benchmark's raw question), for methods that
        measure relevance to it (CDPruner); by default each message's text."""
        inputs = self.build_batch_inputs(messages, dataset)
        layouts = inputs.pop("image_layouts", None)
        full_visual = inputs.pop("full_visual_tokens", None)
        if self.pruner is not None:
            self.pruner.set_image_layouts(layouts)
            if questions is None:
                questions = ["\n".join(split_message(message)[1]) for message in messages]
            self.pruner.set_question_texts(questions, self.processor.tokenizer)
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        prompt_len = inputs["input_ids"].shape[1]
        row_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        prefill_cache: list[Any] = []
        # The top-level forward returns after the engine's hooks, so the cache is already trimmed; the first call is
        # the prefill. Its per-token widths are read now: decoding grows the same tensors afterwards.
        probe = self.model.register_forward_hook(
            lambda module, args, kwargs, out: None if prefill_cache else prefill_cache.append(
                kv_bytes_per_token(out.cache)),
            with_kwargs=True,
        )
        timer, margins = FirstTokenTimer(), MarginTracker()
        start = time.perf_counter()
        try:
            output = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, streamer=timer,
                logits_processor=LogitsProcessorList([margins]),
            )
        finally:
            probe.remove()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        record = self.pruner.last if self.pruner is not None else None
        n_layers = self.model.config.get_text_config().num_hidden_layers
        visual = self.visual_token_counts(inputs["input_ids"])
        answers, self.batch_stats = [], []
        for row, (length, n_visual) in enumerate(zip(row_lengths, visual)):
            new_tokens = self._answer_tokens(output[row, prompt_len:])
            kept = record.kept[row].tolist() if record is not None else list(range(n_visual))
            full = full_visual[row] if full_visual is not None else n_visual
            unpruned = [length] * n_layers
            computed = (  # the row's own lengths: its batch padding is not its cost
                pruned_layer_lengths(record, self.pruner.config.cuts(), length, n_layers, row)
                if record is not None
                else unpruned
            )
            self.batch_stats.append(GenerationStats(
                prompt_tokens=length,
                visual_tokens=n_visual,
                full_visual_tokens=full,
                kept_visual_tokens=len(kept),
                new_tokens=int(new_tokens.numel()),
                select_seconds=record.select_seconds / len(messages) if record is not None else 0.0,
                prefill_seconds=timer.seconds,
                generate_seconds=seconds,
                kv_cache_bytes=row_kv_cache_bytes(
                    prefill_cache[0], record.row_cache_lengths[row] if record is not None else unpruned
                ),
                prefill_flops=prefill_flops(self.model.config, computed),
                prefill_flops_unpruned=prefill_flops(self.model.config, [length - n_visual + full] * n_layers),
                kept_visual=kept,
                batch_size=len(messages),
                decision_margin=margins.smallest(row, int(new_tokens.numel())),
            ))
            answers.append(self.decode(new_tokens))
        self.stats = self.batch_stats[0]
        return answers

    def _answer_tokens(self, generated: torch.Tensor) -> torch.Tensor:
        """A row's new tokens up to its first end token (a batch pads rows that finished early)."""
        ends = self.model.generation_config.eos_token_id
        ends = [ends] if isinstance(ends, int) else list(ends or [])
        stop = torch.isin(generated, torch.tensor(ends, device=generated.device)).nonzero()
        return generated[: int(stop[0]) + 1] if len(stop) else generated
