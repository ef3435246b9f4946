"""The GSM8K grader: answer extraction in two documented conventions, and number comparison.

Published accuracies for one model on GSM8K range widely with the extractor alone, so every
evaluation here reports both conventions, and this module is the one place that grades answers
(training rewards call it too).

Conventions (following OpenAI grade-school-math `dataset.py`, whose `extract_answer` reads the
number after `#### `, and lm-evaluation-harness `gsm8k` task's `strict-match` / `flexible-extract`
filters):

* ``strict``: the answer where the prompt asked for it. The first ``<answer>...</answer>`` tag,
  whose first number is the answer; otherwise the number right after the first ``#### `` marker
  (an optional ``$`` may precede it). No tag and no marker -> no answer (``None``).
* ``flexible``: the last number anywhere in the completion (lm-eval's flexible-extract).

Numbers: an optional sign (``-``, ``+`` or the unicode minus, not when glued to a preceding word or
digit, so ``16-3`` is two numbers), an optional ``$``, digits with optional thousands separators
(``1,450,000``; a comma not followed by exactly three digits separates numbers: ``3,4`` is 3 and
4), an optional decimal part, an optional ``/denominator`` (a simple fraction). A trailing
sentence period is not part of the number. Extracted numbers are normalised to a canonical string:
no separators, no ``$``, no ``+``, no trailing zeros after the decimal point, ``-0`` -> ``0``,
fractions reduced (``6/8`` -> ``3/4``, ``4/2`` -> ``2``).

``is_correct(pred, gold)`` compares as exact rationals, so ``0.75`` == ``3/4`` and ``18.00`` == ``18``.

>>> extract_answer("She makes 9 * 2 = $18 a day.\\n#### 18", "strict")
'18'
>>> extract_answer("<answer> $1,450,000.00 </answer>", "strict")
'1450000'
>>> extract_answer("So the answer is 16-3-4 = 9.", "flexible")
'9'
>>> is_correct(extract_answer("... that is 0.5 of it", "flexible"), "1/2")
True
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

MODES = ("strict", "flexible")

NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-+\u2212])?\$?\s?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
    r"(?P<dec>\.\d+)?"
    r"(?:/(?P<den>\d+))?"
)
# A sign glued to a preceding digit is a minus operator, handled by the lookbehind above only for
# word characters; digits before '-' count as words, so '16-3' yields 16 and 3.
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
HASH_MARK = re.compile(r"####\s*")


def to_number(text: str | None) -> Fraction | None:
    """Exact value of a normalised (or raw) number string, or None."""
    if not isinstance(text, str):  # None, or NaN from a DataFrame column
        return None
    m = NUMBER.fullmatch(text.strip()) or NUMBER.search(text)
    if not m:
        return None
    try:
        value = Fraction(Decimal(m.group("int").replace(",", "") + (m.group("dec") or "")))
    except InvalidOperation:
        return None
    if m.group("den"):
        den = int(m.group("den"))
        if den == 0:
            return None
        value /= den
    return -value if m.group("sign") in ("-", "\u2212") else value


def normalize(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    dec = Decimal(value.numerator) / Decimal(value.denominator)
    if Fraction(dec) == value:  # terminating decimal: 0.5, 12.25
        return format(dec.normalize(), "f")
    return f"{value.numerator}/{value.denominator}"


def _numbers(text: str) -> list[str]:
    out = []
    for m in NUMBER.finditer(text):
        v = to_number(m.group(0))
        if v is not None:
            out.append(normalize(v))
    return out


def extract_answer(text: str, mode: str = "strict") -> str | None:
    """The normalised answer in `text` under `mode` ('strict' or 'flexible'), or None."""
    if mode == "flexible":
        nums = _numbers(text)
        return nums[-1] if nums else None
    if mode != "strict":
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    tag = ANSWER_TAG.search(text)
    if tag:
        nums = _numbers(tag.group(1))
        return nums[0] if nums else None
    mark = HASH_MARK.search(text)
    if mark:
        m = NUMBER.match(text, mark.end())
        return normalize(to_number(m.group(0))) if m and to_number(m.group(0)) is not None else None
    return None


def gold_answer(solution: str) -> str:
    """The gold number of a GSM8K solution (the text after its '#### ')."""
    ans = extract_answer(solution, "strict")
    if ans is None:
        raise ValueError(f"GSM8K solution has no '#### <number>' line: {solution[-80:]!r}")
    return ans


def is_correct(pred: str | None, gold: str) -> bool:
    p, g = to_number(pred), to_number(gold)
    return p is not None and g is not None and p == g
