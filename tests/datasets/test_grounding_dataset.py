"""GroundingDataset: prompts per model family, and scoring of hand-made answers in each coordinate frame."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from vlmeval_ivcp.datasets import registry
from vlmeval_ivcp.datasets.grounding import GroundingDataset, qwen25vl_input_size

# A 98x70 picture: Qwen2.5-VL's input is 112x56 (3.5 patches round to 4, 2.5 patches round to 2; half to even).
WIDTH, HEIGHT = 98, 70


def picture_base64(width: int = WIDTH, height: int = HEIGHT) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color=(10, 200, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_split(root: Path, name: str, answers: list[str]) -> None:
    """A split with one row per answer, all on the same 98x70 picture, as tools/convert_to_tsv.py writes it."""
    rows = [
        {"index": 100 + position, "image": picture_base64(), "question": f"thing {position}", "answer": answer,
         "height": HEIGHT, "width": WIDTH}
        for position, answer in enumerate(answers)
    ]
    pd.DataFrame(rows).to_csv(root / f"{name}.tsv", sep="\t", index=False)


def predictions_of(dataset: GroundingDataset, answers: list[str]) -> pd.DataFrame:
    """The runner's predictions table: the TSV's columns but `image`, plus `prediction`."""
    table = dataset.data.drop(columns=["image"]).copy()
    table["prediction"] = answers
    return table


def test_the_class_is_found_by_name_once_registered(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "DATASET_CLASSES", [*registry.DATASET_CLASSES, GroundingDataset])
    write_split(tmp_path, "RefCOCOg_test_for_qwen25vl", ["0 0 56 28"])
    dataset = registry.build_dataset("RefCOCOg_test_for_qwen25vl", tmp_path)
    assert isinstance(dataset, GroundingDataset) and dataset.TYPE == "GROUNDING" and len(dataset) == 1


def test_supported_names_are_the_eight_splits_plain_and_for_qwen25vl():
    assert len(GroundingDataset.SUPPORTED) == 16
    assert {"RefCOCO_testB", "RefCOCO+_val", "RefCOCOg_val_for_qwen25vl"} <= set(GroundingDataset.SUPPORTED)


@pytest.mark.parametrize(
    "frame,prompt",
    [
        ("qwen25vl_abs", "Locate the man on the left and output the bbox coordinates in JSON format."),
        (
            "norm1000",
            "Please provide the bounding box coordinate of the region this sentence describes: "
            "<ref>the man on the left</ref>",
        ),
        ("norm999", "Locate <|ref|>the man on the left<|/ref|> in the given image."),
        (
            "norm1",
            "Please provide the bounding box coordinate of the region this sentence describes: the man on the left. "
            "Answer with [x1, y1, x2, y2], the top-left and bottom-right corners as fractions of the image width "
            "and height between 0 and 1.",
        ),
    ],
)
def test_each_family_gets_its_prompt_after_the_picture(tmp_path, frame, prompt):
    write_split(tmp_path, "RefCOCO_val", ["0 0 10 10"])
    dataset = GroundingDataset("RefCOCO_val", tmp_path, frame=frame)
    dataset.data.loc[0, "question"] = "the man on the left"
    message = dataset.message(0)
    assert [part["type"] for part in message] == ["image", "text"]
    assert Image.open(message[0]["value"]).size == (WIDTH, HEIGHT)
    assert message[1]["value"] == prompt


def test_the_default_frame_is_qwen25vl_and_a_frame_without_a_prompt_is_refused(tmp_path):
    write_split(tmp_path, "RefCOCO_val", ["0 0 10 10"])
    assert GroundingDataset("RefCOCO_val", tmp_path).frame.name == "qwen25vl_abs"
    with pytest.raises(KeyError, match="no grounding prompt for frame 'abs'"):
        GroundingDataset("RefCOCO_val", tmp_path, frame="abs")
    with pytest.raises(KeyError, match="RefCOCO_train"):
        GroundingDataset("RefCOCO_train", tmp_path)


def test_a_missing_column_names_the_column(tmp_path):
    write_split(tmp_path, "RefCOCO_val", ["0 0 10 10"])
    table = pd.read_csv(tmp_path / "RefCOCO_val.tsv", sep="\t").drop(columns=["height"])
    table.to_csv(tmp_path / "RefCOCO_val.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match="height"):
        GroundingDataset("RefCOCO_val", tmp_path)


def test_qwen_on_its_own_split_scores_hits_misses_and_unparsed_answers(tmp_path):
    # Ground truth in the resized-input frame (112x56), compared as it is.
    write_split(tmp_path, "RefCOCO_val_for_qwen25vl", ["0 0 56 28", "56 0 112 56", "0 0 112 56"])
    dataset = GroundingDataset("RefCOCO_val_for_qwen25vl", tmp_path)
    answers = [
        '```json\n[{"bbox_2d": [0, 0, 56, 28], "label": "thing 0"}]\n```',  # exact: IoU 1
        '{"bbox_2d": [0, 0, 56, 56]}',  # disjoint from 56..112: IoU 0
        "I cannot see it.",  # no box: a miss, counted
    ]
    report = dataset.evaluate(predictions_of(dataset, answers))
    assert report == {
        "overall": pytest.approx(1 / 3),
        "acc@0.5": pytest.approx(1 / 3),
        "mean_iou": pytest.approx(1 / 3),
        "num_samples": 3,
        "num_unparsed": 1,
    }


def test_qwen_on_a_plain_split_is_compared_in_original_pixels(tmp_path):
    # Qwen's input for 98x70 is 112x56: x scales by 98/112, y by 70/56 on the way back to original pixels.
    assert qwen25vl_input_size(WIDTH, HEIGHT) == (112, 56)
    write_split(tmp_path, "RefCOCO+_testA", ["49 0 98 70", "49 0 98 70"])
    dataset = GroundingDataset("RefCOCO+_testA", tmp_path)
    # The right half in input pixels is exact; the truth's own numbers, read as input pixels, map to
    # (42.875, 0, 85.75, 87.5): intersection 36.75 x 70 = 2572.5, union 3751.5625 + 3430 - 2572.5.
    report = dataset.evaluate(predictions_of(dataset, ['{"bbox_2d": [56, 0, 112, 56]}', "[49, 0, 98, 70]"]))
    assert report["acc@0.5"] == 1.0
    assert report["mean_iou"] == pytest.approx((1.0 + 2572.5 / 4609.0625) / 2)


def test_another_family_on_a_qwen_split_maps_the_truth_out_of_the_resized_frame(tmp_path):
    write_split(tmp_path, "RefCOCOg_val_for_qwen25vl", ["56 0 112 56"])
    dataset = GroundingDataset("RefCOCOg_val_for_qwen25vl", tmp_path, frame="norm1000")
    report = dataset.evaluate(predictions_of(dataset, ["<ref>thing</ref><box>[[500, 0, 1000, 1000]]</box>"]))
    assert report["acc@0.5"] == 1.0 and report["mean_iou"] == pytest.approx(1.0)


def test_normalised_answers_on_a_plain_split(tmp_path):
    write_split(tmp_path, "RefCOCO_testB", ["0 0 49 35", "0 0 49 35"])
    dataset = GroundingDataset("RefCOCO_testB", tmp_path, frame="norm1")
    report = dataset.evaluate(predictions_of(dataset, ["[0.0, 0.0, 0.5, 0.5]", "[0.5, 0.5, 1.0, 1.0]"]))
    assert (report["acc@0.5"], report["mean_iou"], report["num_unparsed"]) == (0.5, pytest.approx(0.5), 0)


def test_an_input_size_carried_by_the_predictions_wins_over_the_derived_one(tmp_path):
    write_split(tmp_path, "RefCOCO_val", ["49 0 98 70"])
    dataset = GroundingDataset("RefCOCO_val", tmp_path)
    table = predictions_of(dataset, ['{"bbox_2d": [98, 0, 196, 140]}'])  # the right half of a 196x140 input
    table["input_width"], table["input_height"] = 196, 140
    assert dataset.evaluate(table)["mean_iou"] == pytest.approx(1.0)


def test_bad_predictions_name_the_row_or_the_column(tmp_path):
    write_split(tmp_path, "RefCOCO_val", ["49 0 98 70", "0 0 10 10"])
    dataset = GroundingDataset("RefCOCO_val", tmp_path)
    table = predictions_of(dataset, ['{"bbox_2d": [56, 0, 112, 56]}', "[0, 0, 10, 10]"])
    unreadable = table.copy()
    unreadable.loc[1, "width"] = None  # the input size cannot be derived from a missing picture width
    with pytest.raises(ValueError, match=r"row index=101: width and height must be positive numbers"):
        dataset.evaluate(unreadable)
    with pytest.raises(KeyError, match=r"RefCOCO_val scores need column\(s\) \['width'\]"):
        dataset.evaluate(table.drop(columns=["width"]))
    with pytest.raises(KeyError, match=r"RefCOCO_val scores need column\(s\) \['answer'\]"):
        dataset.evaluate(table.drop(columns=["answer"]))
