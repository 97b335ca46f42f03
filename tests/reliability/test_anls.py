"""Issue 16 "Also": ANLS's edit distance comes from rapidfuzz and equals the textbook dynamic programme."""

from __future__ import annotations

import random

import pytest

from vlmeval_ivcp.evaluation.vqa import anls, levenshtein


def textbook_levenshtein(a: str, b: str) -> int:
    """The Wagner-Fischer dynamic programme (what this package computed before rapidfuzz)."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


CASES = [("kitten", "sitting"), ("", "abc"), ("same", "same"), ("flaw", "lawn"), ("ça", "ca"), ("日本語", "日本")]


@pytest.mark.parametrize(("a", "b"), CASES)
def test_identical_values_on_the_known_cases(a, b):
    assert levenshtein(a, b) == textbook_levenshtein(a, b) == levenshtein(b, a)


def test_identical_values_on_random_strings():
    generator = random.Random(0)
    for _ in range(200):
        a = "".join(generator.choice("abc é") for _ in range(generator.randrange(0, 30)))
        b = "".join(generator.choice("abc é") for _ in range(generator.randrange(0, 30)))
        assert levenshtein(a, b) == textbook_levenshtein(a, b)


def test_anls_of_long_replies_uses_the_c_implementation():
    from rapidfuzz.distance import Levenshtein

    long_a, long_b = "ab" * 2500, "ba" * 2500
    assert levenshtein(long_a, long_b) == Levenshtein.distance(long_a, long_b) == 2
    assert anls(long_a, [long_b]) == pytest.approx(1 - 2 / 5000)
