"""Tests of vlmeval_ivcp.evaluation.grounding: frames, box parsing, IoU, Acc@0.5."""

import math
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmeval_ivcp.evaluation.grounding import (
    FRAMES,
    BoxFrame,
    aggregate_grounding,
    get_frame,
    iou,
    parse_answer_boxes,
    parse_box,
    score_grounding,
)

# ---------------------------------------------------------------- IoU


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 5, 15, 15), 25 / 175),
        ((0, 0, 10, 10), (0, 0, 5, 10), 0.5),  # contained half: exactly the hit threshold
        ((0, 0, 4, 2), (2, 0, 6, 2), 4 / 12),
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),  # disjoint
        ((0, 0, 0, 10), (0, 0, 0, 10), 0.0),  # identical but without area
        ((5, 5, 5, 5), (0, 0, 10, 10), 0.0),  # a point
        ((10, 10, 0, 0), (0, 0, 10, 10), 0.0),  # reversed corners count as no area
        ((-4, -4, 0, 0), (-2, -2, 2, 2), 4 / 28),
    ],
)
def test_iou_hand_computed(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


# ---------------------------------------------------------------- frames


@pytest.mark.parametrize(
    ("frame", "box", "size", "input_size", "expected"),
    [
        ("abs", (1.5, 2, 30, 40), (640, 480), None, (1.5, 2, 30, 40)),
        ("norm1000", (100, 200, 500, 1000), (640, 480), None, (64, 96, 320, 480)),
        ("norm999", (333, 111, 666, 999), (1998, 999), None, (666, 111, 1332, 999)),
        ("norm1", (0.25, 0.5, 0.75, 1.0), (640, 480), None, (160, 240, 480, 480)),
        # Original 98x70 shown to Qwen2.5-VL as 112x56: x * 7/8, y * 5/4.
        ("qwen25vl_abs", (56, 28, 112, 56), (98, 70), (112, 56), (49, 35, 98, 70)),
        # The input size is ignored by the frames that do not need it.
        ("norm1000", (0, 0, 1000, 1000), (10, 20), (999, 999), (0, 0, 10, 20)),
    ],
)
def test_frame_to_pixels_hand_computed(frame, box, size, input_size, expected):
    assert get_frame(frame).to_pixels(box, *size, input_size=input_size) == pytest.approx(expected)


def test_resized_input_frame_needs_the_input_size():
    with pytest.raises(ValueError, match="input_size"):
        FRAMES["qwen25vl_abs"].to_pixels((0, 0, 1, 1), 98, 70)
    with pytest.raises(ValueError, match="input_size must be positive"):
        FRAMES["qwen25vl_abs"].to_pixels((0, 0, 1, 1), 98, 70, input_size=(0, 56))


def test_frame_rejects_bad_definitions_and_sizes():
    with pytest.raises(ValueError, match="grid must be > 0"):
        BoxFrame("broken", grid=0)
    with pytest.raises(ValueError, match="cannot also"):
        BoxFrame("broken", grid=1000, on_resized_input=True)
    with pytest.raises(ValueError, match="picture size must be positive"):
        FRAMES["abs"].to_pixels((0, 0, 1, 1), 0, 10)


def test_get_frame_lists_known_frames():
    assert get_frame(FRAMES["norm1"]) is FRAMES["norm1"]
    assert set(FRAMES) == {"abs", "qwen25vl_abs", "norm1000", "norm999", "norm1"}
    with pytest.raises(KeyError, match="norm1000"):
        get_frame("norm100")


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"bbox_2d": [10, 20, 30.5, 40], "label": "man 2"}', (10, 20, 30.5, 40)),
        ('```json\n[\n  {"bbox_2d": [12, 34, 56, 78], "label": "the dog"}\n]\n```', (12, 34, 56, 78)),
        ('label 3 of 4: {"bbox_2d": [1, 2, 3, 4]}', (1, 2, 3, 4)),
        ('{"bbox": [5, 6, 7, 8]}', (5, 6, 7, 8)),
        ("[[100, 200, 300, 400]]", (100, 200, 300, 400)),
        ("<ref>man 2</ref><box>[[100, 200, 300, 400]]</box>", (100, 200, 300, 400)),
        ("<|ref|>the 2 cats<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>", (1, 2, 3, 4)),
        ("(10,20),(30,40)", (10, 20, 30, 40)),
        ("from (10, 20) to (30, 40)", (10, 20, 30, 40)),
        ("[0.12, 0.3, 0.5, 0.75]", (0.12, 0.3, 0.5, 0.75)),
        ("the box is 1 2 3 4.", (1, 2, 3, 4)),
        ("Qwen2.5 answer 10, 20, 30, 40", (10, 20, 30, 40)),
        ("[-5, -2.5, 10, 20]", (-5, -2.5, 10, 20)),
        ("[30, 40, 10, 20]", (10, 20, 30, 40)),  # reversed corners are swapped
        ("[[1, 2, 3, 4], [5, 6, 7, 8]]", (1, 2, 3, 4)),  # the first box
        ("the 2nd man on the left [10, 20, 30, 40]", (10, 20, 30, 40)),  # bracket beats loose numbers
        ("[1e999, 1, 2, 3] then [5, 6, 7, 8]", (5, 6, 7, 8)),  # non-finite values are skipped
    ],
)
def test_parse_box_formats(text, expected):
    assert parse_box(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no box here",
        "[1, 2, 3]",
        "(10, 20)",
        "x1 y1 x2 y2",
        "v1.2.3.4",
        "1-2-3-4",
        "[nan, 1, 2, 3]",
        "a1 b2 c3 d4",
    ],
)
def test_parse_box_without_a_box(text):
    assert parse_box(text) is None


def test_parse_box_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        parse_box(None)


def _is_valid_box(box) -> bool:
    return len(box) == 4 and all(math.isfinite(v) for v in box) and box[0] <= box[2] and box[1] <= box[3]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parse_box_never_raises_on_text(text):
    box = parse_box(text)
    assert box is None or _is_valid_box(box)


_PUNCTUATION_AND_DIGITS = st.text(alphabet="0123456789-.,;:()[]{}<>|/ \n\"'ebox_dt", max_size=60)


@settings(max_examples=200, deadline=None)
@given(_PUNCTUATION_AND_DIGITS)
def test_parse_box_never_raises_on_number_soup(text):
    box = parse_box(text)
    assert box is None or _is_valid_box(box)


_COORDINATE = st.integers(-200_000, 500_000).map(lambda hundredths: hundredths / 100)
_PROSE = st.text(alphabet=string.ascii_letters + " ,:!?'\n", max_size=30)
_STYLES = [
    lambda a, b, c, d: f'```json\n[{{"bbox_2d": [{a}, {b}, {c}, {d}], "label": "person 2"}}]\n```',
    lambda a, b, c, d: f"<|ref|>man 1<|/ref|><|det|>[[{a}, {b}, {c}, {d}]]<|/det|>",
    lambda a, b, c, d: f"[[{a},{b},{c},{d}]]",
    lambda a, b, c, d: f"({a}, {b}), ({c}, {d})",
    lambda a, b, c, d: f"{a} {b} {c} {d}",
]


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(_COORDINATE, _COORDINATE, _COORDINATE, _COORDINATE),
    st.sampled_from(range(len(_STYLES))),
    _PROSE,
    _PROSE,
)
def test_parse_box_recovers_rendered_boxes(box, style, before, after):
    a, b, c, d = box
    text = f"{before} {_STYLES[style](a, b, c, d)} {after}"
    assert parse_box(text) == (min(a, c), min(b, d), max(a, c), max(b, d))


def test_parse_answer_boxes():
    assert parse_answer_boxes("1 2 3 4") == [(1, 2, 3, 4)]
    assert parse_answer_boxes("1.5 2 3 4 30 40 10 20") == [(1.5, 2, 3, 4), (10, 20, 30, 40)]
    for bad in ["", "1 2 3", "1 2 3 x", "1 2 3 4 5", "1 2 inf 4"]:
        with pytest.raises(ValueError, match="answer"):
            parse_answer_boxes(bad)


# ---------------------------------------------------------------- scoring


def _row(index, prediction, answer="0 0 100 100", **sizes):
    return {"index": index, "prediction": prediction, "answer": answer, "width": 200, "height": 100, **sizes}


def test_score_grounding_in_one_frame():
    rows = [
        _row(1, '{"bbox_2d": [0, 0, 100, 100]}'),  # exact
        _row(2, "[0, 0, 100, 50]"),  # IoU 0.5: a hit
        _row(3, "[0, 0, 100, 49]"),  # IoU 0.49: a miss
        _row(4, "I cannot find it."),  # unparsed: a miss
        _row(5, float("nan")),  # an empty cell as pandas reads it
        _row(6, "[150, 0, 200, 100]", answer="0 0 100 100 150 0 200 100"),  # best of two ground-truth boxes
    ]
    scores = score_grounding(rows, "abs")
    assert [score["index"] for score in scores] == [1, 2, 3, 4, 5, 6]
    assert [score["hit"] for score in scores] == [True, True, False, False, False, True]
    assert [score["parsed"] for score in scores] == [True, True, True, False, False, True]
    assert [score["iou"] for score in scores] == pytest.approx([1.0, 0.5, 0.49, 0.0, 0.0, 1.0])


def test_score_grounding_maps_other_frames_to_pixels():
    # The picture is 200x100; the ground truth is its left half in original pixels.
    rows = [_row(1, "[[0, 0, 500, 1000]]"), _row(2, "[[0, 0, 250, 1000]]")]
    assert [s["iou"] for s in score_grounding(rows, "norm1000")] == pytest.approx([1.0, 0.5])
    rows = [_row(1, "[0, 0, 0.5, 1]")]
    assert score_grounding(rows, FRAMES["norm1"])[0]["iou"] == pytest.approx(1.0)
    # Qwen2.5-VL saw a 224x112 input: its left half is x < 112.
    rows = [_row(1, '{"bbox_2d": [0, 0, 112, 112]}', input_width=224, input_height=112)]
    assert score_grounding(rows, "qwen25vl_abs")[0]["iou"] == pytest.approx(1.0)


def test_score_grounding_compares_qwen_answers_in_their_own_frame():
    # A `_for_qwen25vl` answer is in the resized-input frame already: no sizes needed.
    rows = [{"index": 7, "prediction": '{"bbox_2d": [0, 0, 56, 28]}', "answer": "0 0 56 56"}]
    scores = score_grounding(rows, "qwen25vl_abs", answer_frame="qwen25vl_abs")
    assert scores == [{"index": 7, "iou": 0.5, "hit": True, "parsed": True}]


def test_score_grounding_errors_name_the_row():
    with pytest.raises(KeyError, match=r"index=3.*input_width"):
        score_grounding([_row(3, "[0, 0, 1, 1]")], "qwen25vl_abs")
    with pytest.raises(KeyError, match=r"index=8.*width"):
        score_grounding([{"index": 8, "prediction": "[0, 0, 1, 1]", "answer": "0 0 1 1"}], "norm1")
    with pytest.raises(ValueError, match="index=4"):
        score_grounding([_row(4, "[0, 0, 1, 1]", answer="1 2 3")], "abs")
    with pytest.raises(TypeError, match="index=5"):
        score_grounding([_row(5, ["[0, 0, 1, 1]"])], "abs")
    with pytest.raises(KeyError, match="prediction"):
        score_grounding([{"index": 6, "answer": "0 0 1 1"}], "abs")
    # A size cell that is empty or not a number: the row is named, not just the bad value.
    with pytest.raises(ValueError, match=r"index=9: unusable picture sizes .*'width': nan"):
        score_grounding([_row(9, "[0, 0, 1, 1]", width=float("nan"))], "norm1")
    with pytest.raises(ValueError, match=r"index=10: unusable picture sizes .*'input_height': 'big'"):
        score_grounding([_row(10, "[0, 0, 1, 1]", input_width=10, input_height="big")], "qwen25vl_abs")


def test_aggregate_grounding_hand_computed():
    def scores(hits, ious, parsed):
        return [
            {"index": i, "hit": h, "iou": v, "parsed": p}
            for i, (h, v, p) in enumerate(zip(hits, ious, parsed, strict=True))
        ]

    result = aggregate_grounding(
        {
            "RefCOCO_val": scores([True, False, True, True], [0.9, 0.1, 0.6, 0.8], [True, True, True, True]),
            "RefCOCO_testA": scores([True, False], [1.0, 0.0], [True, False]),
        }
    )
    assert result["per_split"]["RefCOCO_val"] == {
        "acc@0.5": 0.75,
        "mean_iou": pytest.approx(0.6),
        "num_samples": 4,
        "num_unparsed": 0,
    }
    assert result["per_split"]["RefCOCO_testA"]["acc@0.5"] == 0.5
    assert result["per_split"]["RefCOCO_testA"]["num_unparsed"] == 1
    assert result["acc@0.5"] == pytest.approx(0.625)  # each split weighs the same
    assert result["mean_iou"] == pytest.approx(0.55)
    assert result["num_samples"] == 6
    assert result["num_unparsed"] == 1


def test_aggregate_grounding_rejects_empty_input():
    with pytest.raises(ValueError, match="at least one split"):
        aggregate_grounding({})
    with pytest.raises(ValueError, match="RefCOCO_val"):
        aggregate_grounding({"RefCOCO_val": []})
