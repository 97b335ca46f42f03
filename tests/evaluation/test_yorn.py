"""Yes/no extraction, MME, POPE and HallusionBench scores on hand-computed cases."""

from __future__ import annotations

import pandas as pd
import pytest

from vlmeval_ivcp.evaluation.yorn import (
    MME_COGNITION,
    MME_PERCEPTION,
    add_hallusion_ids,
    binary_scores,
    extract_yes_no,
    hallusion_scores,
    mme_scores,
    pope_scores,
    yes_no_accuracy,
    yes_no_hits,
)


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("Yes", "Yes"),
        ("yes.", "Yes"),
        ("No, there is not.", "No"),
        ("NO", "No"),
        ("Yes, there is no doubt.", "Unknown"),  # both words: VLMEvalKit leaves it to the judge
        ("There is a dog.", "Unknown"),
        ("Nope", "Unknown"),
        ("yesterday", "Unknown"),
        ("", "Unknown"),
        # VLMEvalKit's YOrN_Extraction splits at whitespace after its process_punctuation only:
        ("**No**", "Unknown"),  # "*" is no punctuation there
        ("No: the table is empty.", "Unknown"),  # nor is ":"
        ("Answer: yes", "Yes"),
        ("(yes)", "Yes"),
        ("yes/no", "Unknown"),  # "/" touches no space: it separates "yes" and "no"
        ("Yes-ish, I would say so", "Yes"),
        ("isn't", "Unknown"),
        ("No.\n", "No"),
    ],
)
def test_extract_yes_no(prediction, expected):
    assert extract_yes_no(prediction) == expected


def test_hits_compare_case_insensitively_and_unknown_is_wrong():
    df = pd.DataFrame({"extracted": ["Yes", "no", "Unknown", None], "answer": ["yes", "No", "No", "Yes"]})
    assert yes_no_hits(df).tolist() == [True, True, False, False]
    assert yes_no_accuracy(df)["overall"] == 0.5


def test_answer_that_is_not_yes_or_no_is_named():
    df = pd.DataFrame({"extracted": ["Yes"], "answer": ["maybe"]}, index=[42])
    with pytest.raises(ValueError, match="row 42.*'maybe'"):
        yes_no_hits(df)


def _mme_rows(category: str, image: str, hits: list[bool]) -> list[dict]:
    return [
        {"category": category, "image_path": image, "answer": "Yes", "extracted": "Yes" if hit else "No"}
        for hit in hits
    ]


def test_mme_acc_plus_needs_both_questions_of_an_image():
    df = pd.DataFrame(
        _mme_rows("existence", "e1.png", [True, True])
        + _mme_rows("existence", "e2.png", [True, False])
        + _mme_rows("OCR", "o1.png", [False, False])
        + _mme_rows("OCR", "o2.png", [True, False])
        + _mme_rows("code_reasoning", "c1.png", [True, True])
    )
    report = mme_scores(df)
    existence = report["categories"]["existence"]
    assert existence == {"acc": 0.75, "acc_plus": 0.5, "score": 125.0}
    assert report["categories"]["OCR"] == {"acc": 0.25, "acc_plus": 0.0, "score": 25.0}
    assert report["perception"] == 150.0
    assert report["cognition"] == 200.0
    assert "count" in report["missing_categories"] and "existence" not in report["missing_categories"]
    assert len(report["missing_categories"]) == len(MME_PERCEPTION) + len(MME_COGNITION) - 3


def test_mme_full_marks_are_2000_and_800():
    rows = [row for name in MME_PERCEPTION + MME_COGNITION for row in _mme_rows(name, f"{name}.png", [True, True])]
    report = mme_scores(pd.DataFrame(rows))
    assert report["perception"] == 2000.0 and report["cognition"] == 800.0 and report["missing_categories"] == []


def test_mme_image_key_is_a_parameter():
    # Both rows share the image "7" only through the custom key; by image_path they would be two images.
    df = pd.DataFrame(_mme_rows("color", "a.png", [True]) + _mme_rows("color", "b.png", [False]))
    df["image_ref"] = ["7", "7"]
    assert mme_scores(df, image_key="image_ref")["categories"]["color"]["acc_plus"] == 0.0
    assert mme_scores(df)["categories"]["color"]["acc_plus"] == 0.5


def test_mme_row_without_image_key_is_an_error():
    df = pd.DataFrame(_mme_rows("color", "a.png", [True]) + _mme_rows("color", None, [True]))
    with pytest.raises(ValueError, match="row 1 has no 'image_path'"):
        mme_scores(df)


def test_mme_unknown_category_is_an_error():
    with pytest.raises(ValueError, match="unknown MME categories \\['colour'\\]"):
        mme_scores(pd.DataFrame(_mme_rows("colour", "a.png", [True])))


def test_binary_scores_hand_computed():
    # tp=2, fp=1, fn=1, tn=1
    scores = binary_scores([True, True, True, False, False], [True, True, False, True, False])
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["count"] == 5


def test_binary_scores_with_zero_positives_do_not_divide_by_zero():
    assert binary_scores([False, False], [False, False]) == {
        "f1": 0.0,
        "accuracy": 1.0,
        "precision": 0.0,
        "recall": 0.0,
        "count": 2,
    }
    assert binary_scores([True], [False])["f1"] == 0.0


def test_binary_scores_reject_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="2 labels but 1"):
        binary_scores([True, False], [True])
    with pytest.raises(ValueError, match="at least one row"):
        binary_scores([], [])


def test_pope_overall_and_per_subset():
    df = pd.DataFrame(
        {
            "answer": ["Yes", "Yes", "No", "No", "No", "Yes"],
            "extracted": ["Yes", "Unknown", "Yes", "No", "No", "Yes"],
            "category": ["adversarial", "adversarial", "adversarial", "random", "random", "popular,random"],
        }
    )
    report = pope_scores(df)
    overall = report["overall"]
    # Pooled over the subsets, as VLMEvalKit scores POPE: row 5 counts once in "popular" and once in "random".
    # tp=3 (rows 0, 5, 5), fp=1 (row 2), fn=1 (row 1, Unknown counts as no), tn=2
    assert overall["precision"] == pytest.approx(3 / 4) and overall["recall"] == pytest.approx(3 / 4)
    assert overall["accuracy"] == pytest.approx(5 / 7) and overall["count"] == 7
    assert set(report["category"]) == {"adversarial", "popular", "random"}
    assert report["category"]["random"]["count"] == 3  # row 5 counts in both of its subsets
    assert report["category"]["random"]["f1"] == 1.0
    adversarial = report["category"]["adversarial"]
    assert adversarial["precision"] == 0.5 and adversarial["recall"] == 0.5 and adversarial["f1"] == 0.5


def test_pope_overall_is_the_pooled_score_of_the_subsets():
    # VLMEvalKit's POPE TSV stores a question shared by subsets once ("adversarial,popular,random"); its POPE_rating
    # splits such rows before scoring, so the overall F1 is that of the three subsets pooled (9000 questions on the
    # full set), not that of the deduplicated rows. A row without a subset counts once.
    df = pd.DataFrame(
        {
            "answer": ["Yes", "No", "No", "Yes"],
            "extracted": ["Yes", "Yes", "No", "No"],
            "category": ["adversarial,popular,random", "adversarial", "random", None],
        }
    )
    overall = pope_scores(df)["overall"]
    # Pooled rows: row 0 three times (tp), row 1 (fp), row 2 (tn), row 3 (fn): tp=3, fp=1, fn=1, tn=1.
    assert overall == pytest.approx(
        {"f1": 3 / 4, "accuracy": 4 / 6, "precision": 3 / 4, "recall": 3 / 4, "count": 6}
    )


def test_pope_accuracy_counts_unknown_wrong_as_vlmevalkit():
    # VLMEvalKit's POPE_rating: F1, precision and recall read an Unknown reply as "no", but accuracy is the mean of
    # `score = (answer == extracted)`, so an Unknown reply to a "No" question is wrong for accuracy alone.
    df = pd.DataFrame(
        {
            "answer": ["No", "No", "Yes", "No"],
            "extracted": ["Unknown", "No", "Yes", "Unknown"],
            "category": ["random", "random", "popular", "popular,random"],
        }
    )
    report = pope_scores(df)
    # Pooled rows: 0 (Unknown, wrong), 1 (right), 2 (right), 3 twice (Unknown, wrong): 2 of 5 right.
    assert report["overall"]["accuracy"] == pytest.approx(2 / 5)
    assert report["overall"]["precision"] == 1.0 and report["overall"]["recall"] == 1.0
    assert report["category"]["random"]["accuracy"] == pytest.approx(1 / 3)
    assert report["category"]["popular"]["accuracy"] == pytest.approx(1 / 2)


def test_pope_subset_without_positives():
    df = pd.DataFrame({"answer": ["No", "No"], "extracted": ["No", "Yes"], "category": ["random", "random"]})
    scores = pope_scores(df)["category"]["random"]
    assert scores == {"f1": 0.0, "accuracy": 0.5, "precision": 0.0, "recall": 0.0, "count": 2}


def test_add_hallusion_ids_reads_index_fields():
    df = add_hallusion_ids(pd.DataFrame({"index": ["VS_chart_q_3_1_0", "VD_map_q_10_0_2"]}))
    assert df[["set_id", "figure_id", "question_id"]].values.tolist() == [["3", "1", "0"], ["10", "0", "2"]]
    with pytest.raises(ValueError, match="'bad_index'"):
        add_hallusion_ids(pd.DataFrame({"index": ["bad_index"]}))


def test_hallusion_figure_and_question_accuracy():
    # set 0: figure 0 asks q0, q1; figure 1 asks q0, q1. One wrong answer: figure 1, question 1.
    # set 1: figure 0 asks q0 only, right.
    df = pd.DataFrame(
        {
            "l2-category": ["chart"] * 5,
            "category": ["VS", "VS", "VS", "VS", "VD"],
            "set_id": ["0", "0", "0", "0", "1"],
            "figure_id": ["0", "0", "1", "1", "0"],
            "question_id": ["0", "1", "0", "1", "0"],
            "answer": ["Yes", "No", "No", "Yes", "Yes"],
            "extracted": ["Yes", "No", "No", "No", "Yes"],
        }
    )
    report = hallusion_scores(df)
    assert report["overall"] == pytest.approx({"aAcc": 4 / 5, "fAcc": 2 / 3, "qAcc": 2 / 3})
    assert report["category"]["VD"] == {"aAcc": 1.0, "fAcc": 1.0, "qAcc": 1.0}
    assert report["category"]["VS"] == pytest.approx({"aAcc": 3 / 4, "fAcc": 1 / 2, "qAcc": 1 / 2})
    assert report["l2-category"]["chart"] == report["overall"]


def test_hallusion_keys_are_parameters():
    df = pd.DataFrame(
        {"img": ["a", "a", "b"], "q": ["1", "2", "1"], "answer": ["Yes"] * 3, "extracted": ["Yes", "No", "Yes"]}
    )
    report = hallusion_scores(df, figure_keys=("img",), question_keys=("q",))
    assert report["overall"] == pytest.approx({"aAcc": 2 / 3, "fAcc": 1 / 2, "qAcc": 1 / 2})
    with pytest.raises(KeyError, match="set_id"):
        hallusion_scores(df)
