"""The grader on the real GSM8K test split and on completions in the formats models really emit."""

import re

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
