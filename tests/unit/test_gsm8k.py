"""The grader on the real GSM8K test split and on completions in the formats models really emit."""

import re
from fractions import Fraction

import pytest

from conftest import gsm8k_rows
from lorarank.evaluation.gsm8k import extract_answer, gold_answer, is_correct, normalize, to_number

TEST = gsm8k_rows("test")


def test_the_split_is_the_real_one():
    assert len(TEST) == 1319
    assert TEST[0]["question"].startswith("Janet\u2019s ducks lay 16 eggs per day.")


@pytest.mark.parametrize("mode", ["strict", "flexible"])
def test_every_gold_solution_grades_correct(mode):
    wrong = [i for i, r in enumerate(TEST) if not is_correct(extract_answer(r["answer"], mode), gold_answer(r["answer"]))]
    assert wrong == []


def _change_final_number(solution: str) -> str:
    head, final = solution.rsplit("####", 1)
    value = to_number(final)
    return f"{head}#### {normalize(value + 1)}"


@pytest.mark.parametrize("mode", ["strict", "flexible"])
def test_every_changed_final_number_grades_wrong(mode):
    right = [i for i, r in enumerate(TEST)
             if is_correct(extract_answer(_change_final_number(r["answer"]), mode), gold_answer(r["answer"]))]
    assert right == []


def test_gold_with_thousands_separators():
    golds = {gold_answer(r["answer"]) for r in TEST if re.search(r"####\s*\d{1,3},\d{3}", r["answer"])}
    assert "1450000" in golds and len(golds) >= 10


# (completion, strict, flexible) — shapes seen from instruction-tuned and small models
CASES = [
    ("<reasoning>\n16 - 3 - 4 = 9 eggs, 9 * 2 = 18\n</reasoning>\n<answer>\n18\n</answer>", "18", "18"),
    ("<reasoning>9*2</reasoning><answer>$18.00</answer>", "18", "18"),
    ("<answer>18 dollars</answer>\nThat is 20 minus 2.", "18", "2"),
    ("She makes 9 * 2 = $<<9*2=18>>18 a day.\n#### 18", "18", "18"),
    ("#### $1,450,000", "1450000", "1450000"),
    ("The answer is 18.", None, "18"),
    ("So she makes \\boxed{18} dollars.", None, "18"),
    ("The temperature is -7 degrees.\n#### -7", "-7", "-7"),
    ("Half of it: 1/2\n#### 0.5", "0.5", "0.5"),
    ("####", None, None),
    ("I am not sure.", None, None),
    ("<answer></answer> 12", None, "12"),
    ("She has 3,4 or 5 apples. #### 5", "5", "5"),
    ("16-3-4=9", None, "9"),
]


@pytest.mark.parametrize("text,strict,flexible", CASES)
def test_completions(text, strict, flexible):
    assert extract_answer(text, "strict") == strict
    assert extract_answer(text, "flexible") == flexible


@pytest.mark.parametrize("pred,gold,ok", [
    ("18", "18", True), ("18.00", "18", True), ("0.75", "3/4", True), ("$5", "5", True),
    ("1,000", "1000", True), ("-3", "3", False), ("17", "18", False), (None, "18", False), ("6/8", "0.75", True),
])
def test_is_correct(pred, gold, ok):
    assert is_correct(pred, gold) is ok


def test_unknown_mode():
    with pytest.raises(ValueError, match="mode 'loose'"):
        extract_answer("1", "loose")


@pytest.mark.parametrize("pred,gold,ok", [
    # numbers are compared exactly (README: "numbers compared exactly"): never rounded to a whole number, whichever
    # way round() would go (half to even: round(2.5) == 2, round(18.5) == 18, round(3.5) == 4)
    ("2.5", "3", False), ("2.5", "2", False), ("3.5", "4", False), ("18.5", "18", False), ("18.4", "18", False),
    ("7.0000001", "7", False), ("6.9999999", "7", False), ("0.4", "0", False), ("-0.4", "0", False),
    ("1/3", "0.333", False), ("1/3", "0.3333333333", False), ("2/3", "1", False), ("$17.99", "18", False),
    ("7.000", "7", True), ("-0", "0", True), ("0.50", "1/2", True), ("2.5", "5/2", True), ("1/3", "2/6", True),
])
def test_numbers_are_compared_exactly_never_rounded(pred, gold, ok):
    assert is_correct(pred, gold) is ok


@pytest.mark.parametrize("text,answer", [
    ("#### 2.5", "2.5"), ("<answer>7.0000001</answer>", "7.0000001"), ("#### $18.50", "18.5"),
    ("<answer>-0.4</answer>", "-0.4"), ("#### 1/3", "1/3"), ("#### 12.000", "12"),
])
def test_a_decimal_answer_is_extracted_as_written_in_both_modes(text, answer):
    for mode in ("strict", "flexible"):
        got = extract_answer(text + " and that is all.", mode) if mode == "flexible" else extract_answer(text, mode)
        assert got == answer, mode
    gold = to_number(answer)
    assert is_correct(extract_answer(text, "strict"), normalize(gold))
    assert not is_correct(extract_answer(text, "strict"), normalize(gold + Fraction(1, 10 ** 7)))  # 1e-7 off is wrong
