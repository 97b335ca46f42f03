import pandas as pd
import pytest

from vlmeval_ivcp.evaluation.loyalty import loyalty


def _table(pairs):
    return pd.DataFrame(pairs, columns=["index", "prediction"])


def test_loyalty_counts_agreement_on_shared_rows_after_normalising():
    reference = _table([(1, "B"), (2, "yes"), (3, "A cat."), (4, "C")])
    pruned = _table([(1, "B."), (2, "No"), (3, "a  cat")])
    assert loyalty(pruned, reference) == {"loyalty": 2 / 3, "count": 3, "missing": 1}


def test_loyalty_can_compare_extracted_answers():
    reference = _table([(1, "The answer is B"), (2, "A")])
    pruned = _table([(1, "B"), (2, "(A)")])
    letter = lambda row: row["prediction"].strip("()")[-1]  # noqa: E731
    assert loyalty(pruned, reference, answer_of=letter)["loyalty"] == 1.0


@pytest.mark.parametrize("pruned,match", [(_table([(9, "x")]), "share no index"),
                                          (_table([(1, "x"), (1, "y")]), "repeat index 1")])
def test_loyalty_refuses_tables_it_cannot_compare(pruned, match):
    with pytest.raises(ValueError, match=match):
        loyalty(pruned, _table([(1, "x")]))
