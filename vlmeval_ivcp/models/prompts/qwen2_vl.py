"""VLMEvalKit's custom prompts of its Qwen2-VL class (`Qwen2VLPromptMixin`, `vlmeval/vlm/qwen2_vl/prompt.py`), as
the IVC-Prune release's VLMEvalKit fork has them (the class it evaluates Qwen2.5-VL with, `use_custom_prompt=True`).

Which benchmarks (release `use_custom_prompt`): MMMU_DEV_VAL / MMMU_TEST, every multiple-choice set, HallusionBench
and POPE among the yes/no sets (MME keeps its own prompt), every VQA-type set but MMVet (VLMEvalKit counts
OCRBench, MathVista and LLaVABench as VQA), and the grounding sets.
"""

from __future__ import annotations

import re

import pandas as pd

from ...datasets.base import present
from ...evaluation.mcq import options_from_row

MCQ_INSTRUCTION = "Please select the correct answer from the options above."
MCQ_INSTRUCTION_CN = "请直接回答选项字母。"
YES_NO_SUFFIX = " Please answer yes or no."
VQA_SUFFIX = "\nPlease try to answer the question with short words or phrases if possible."
# The release's branch for Qwen2.5-VL (`is_qwen25`); the leading newline is the release's.
GROUNDING_PROMPT = "\nLocate {} and output the bbox coordinates in JSON format."
MMMU = frozenset({"MMMU_DEV_VAL", "MMMU_TEST"})
YES_NO_SETS = frozenset({"HallusionBench", "POPE"})
NOT_VQA = frozenset({"MMVet"})
_CHINESE = re.compile("[\u4e00-\u9fff]")


class Qwen2VLPrompts:
    """The rules; one instance, `QWEN2_VL_PROMPTS`."""

    def applies(self, dataset: str, dataset_type: str | None) -> bool:
        return (
            dataset in MMMU
            or dataset_type in ("MCQ", "GROUNDING")
            or (dataset_type == "Y/N" and dataset in YES_NO_SETS)
            or (dataset_type == "VQA" and dataset not in NOT_VQA)
        )

    def text(self, row: pd.Series, dataset: str, dataset_type: str | None) -> str:
        if dataset in MMMU or dataset_type == "MCQ":
            return self.multiple_choice(row, chinese_aware=dataset not in MMMU)
        if dataset_type == "Y/N":
            return str(row["question"]) + YES_NO_SUFFIX
        if dataset_type == "VQA":
            return str(row["question"]) + VQA_SUFFIX
        if dataset_type == "GROUNDING":
            return GROUNDING_PROMPT.format(row["question"])
        raise ValueError(f"the Qwen2-VL prompts have no rule for dataset {dataset!r} of type {dataset_type!r}")

    @staticmethod
    def multiple_choice(row: pd.Series, chinese_aware: bool) -> str:
        """Hint, question, options and the instruction, trailing whitespace cut; the Chinese instruction when the
        text so far holds a CJK character (not for MMMU); no instruction for a row without options."""
        options = options_from_row(row)
        prompt = f"Hint: {row['hint']}\n" if "hint" in row and present(row["hint"]) else ""
        prompt += f"Question: {row['question']}\n"
        if options:
            prompt += "Options:\n" + "".join(f"{letter}. {text}\n" for letter, text in options.items())
            prompt += MCQ_INSTRUCTION_CN if chinese_aware and _CHINESE.search(prompt) else MCQ_INSTRUCTION
        return prompt.rstrip()


QWEN2_VL_PROMPTS = Qwen2VLPrompts()
