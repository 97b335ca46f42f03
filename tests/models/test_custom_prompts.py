"""VLMEvalKit's Qwen2-VL class prompts (`use_custom_prompt=True`), row type by row type, on the tiny Qwen2.5-VL.

Expected strings derived by reading `Qwen2VLPromptMixin` (`vlmeval/vlm/qwen2_vl/prompt.py`) of the IVC-Prune
release's VLMEvalKit fork: `use_custom_prompt` (MMMU; every MCQ set; HallusionBench and POPE; VQA-type sets but
MMVet; grounding sets) and `_build_mmmu_prompt`, `_build_mcq_prompt`, `_build_yorn_prompt`, `_build_vqa_prompt`,
`_build_vg_prompt` (its Qwen2.5 branch).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from support.tiny import tiny_path
from tests.datasets.fixtures import write_benchmark
from vlmeval_ivcp.datasets.registry import build_dataset
from vlmeval_ivcp.models.registry import MODEL_CLASSES

VQA = "\nPlease try to answer the question with short words or phrases if possible."
SHAPES = {"question": "What shape is it?", "A": "circle", "B": "square", "C": math.nan, "hint": math.nan}


@pytest.fixture(scope="module")
def qwen():
    cls = MODEL_CLASSES["Qwen2_5_VL"]
    return cls(str(tiny_path()), dtype="float32", min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28,
               use_custom_prompt=True)


CASES = [
    ("MMStar", SHAPES,
     "Question: What shape is it?\nOptions:\nA. circle\nB. square\nPlease select the correct answer from the options "
     "above."),
    ("SEEDBench_IMG", {**SHAPES, "hint": "Look closely."},
     "Hint: Look closely.\nQuestion: What shape is it?\nOptions:\nA. circle\nB. square\nPlease select the correct "
     "answer from the options above."),
    ("MMBench_DEV_EN_V11", {**SHAPES, "question": "这是什么形状？"},
     "Question: 这是什么形状？\nOptions:\nA. circle\nB. square\n请直接回答选项字母。"),
    ("MMMU_DEV_VAL", {**SHAPES, "question": "这是什么形状？"},  # the MMMU builder has no Chinese instruction
     "Question: 这是什么形状？\nOptions:\nA. circle\nB. square\nPlease select the correct answer from the options "
     "above."),
    ("MMMU_DEV_VAL", {"question": "What is 6 x 7? ", "A": math.nan, "B": math.nan}, "Question: What is 6 x 7?"),
    ("POPE", {"question": "Is there a cat in the image?"}, "Is there a cat in the image? Please answer yes or no."),
    ("HallusionBench", {"question": "Is the bar red?"}, "Is the bar red? Please answer yes or no."),
    ("TextVQA_VAL", {"question": "What is written?"}, "What is written?" + VQA),
    ("GQA_TestDev_Balanced", {"question": "Is it left?"}, "Is it left?" + VQA),
    ("OCRBench", {"question": "What is the title?"}, "What is the title?" + VQA),
    ("MathVista_MINI", {"question": "How many?"}, "How many?" + VQA),
    ("LLaVABench", {"question": "Describe it."}, "Describe it." + VQA),
    ("RefCOCO_val_for_qwen25vl", {"question": "the red circle"},
     "\nLocate the red circle and output the bbox coordinates in JSON format."),
]


@pytest.mark.parametrize(("dataset", "row", "expected"), CASES)
def test_qwen2_vl_class_prompts(qwen, dataset, row, expected):
    assert qwen.use_custom_prompt(dataset)
    assert qwen.prompt_text(pd.Series(row), dataset) == [{"type": "text", "value": expected}]


@pytest.mark.parametrize("dataset", ["MME", "MMVet", "NotABenchmark", None])
def test_sets_the_class_leaves_to_the_dataset_prompt(qwen, dataset):
    assert not qwen.use_custom_prompt(dataset)


def test_the_message_uses_the_model_prompt_only_when_turned_on(qwen, tmp_path):
    write_benchmark("POPE", tmp_path)
    dataset = build_dataset("POPE", tmp_path)
    question = dataset.data.iloc[0]["question"]
    image, text = dataset.message(0, qwen)
    assert image["type"] == "image" and text["value"] == question + " Please answer yes or no."
    qwen._use_custom_prompt = False
    try:
        assert dataset.message(0, qwen)[1]["value"] == question
    finally:
        qwen._use_custom_prompt = True


def test_vlmevalkit_build_prompt_adds_the_dumped_images(qwen):
    qwen.set_dump_image(lambda line: ["/data/a.png", "/data/b.png"])
    message = qwen.build_prompt(pd.Series({"question": "Is it red?"}), dataset="POPE")
    assert message == [
        {"type": "image", "value": "/data/a.png"},
        {"type": "image", "value": "/data/b.png"},
        {"type": "text", "value": "Is it red? Please answer yes or no."},
    ]


@pytest.mark.parametrize(("adapter", "value", "match"), [
    ("Llava", True, "Llava has no model-specific prompts"),
    ("Qwen2_5_VL", "yes", "use_custom_prompt must be true or false, got 'yes'"),
])
def test_bad_use_custom_prompt_is_refused_before_loading(adapter, value, match):
    with pytest.raises(ValueError, match=match):
        MODEL_CLASSES[adapter]("no/such/checkpoint", use_custom_prompt=value)
