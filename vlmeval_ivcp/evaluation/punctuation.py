"""VLMEvalKit's punctuation rule (`process_punctuation` of `vlmeval/smp/misc.py`), shared by its VQA answer
normalisation and its yes/no reading."""

from __future__ import annotations

import re

# The official VQA evaluation's punctuation set (no period, colon or apostrophe: those are handled apart or kept).
PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_LONE_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
# VLMEvalKit passes `re.UNICODE` (32) where `Pattern.sub` takes its count: only the first 32 periods go.
_PERIODS_REMOVED = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """A mark that touches a space somewhere (or any text with a "1,000"-style number) is deleted everywhere;
    otherwise it separates words ("black-white" -> "black white"). Then the first 32 periods with no digit on
    either side are deleted ("10." and "3.5" keep theirs)."""
    has_number_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if mark in text:
            touches_space = f"{mark} " in text or f" {mark}" in text
            out = out.replace(mark, "" if touches_space or has_number_comma else " ")
    return _LONE_PERIOD.sub("", out, _PERIODS_REMOVED)
