"""GRPO rewards: format and correctness, graded by `lorarank.evaluation.gsm8k` (the evaluation's grader).

Rewards are exact binary fractions (0, 0.25, 0.5, 1): with other partial credits fp32 group std can
come out near 1e-7 instead of 0, which TRL 1.16 miscounts as a non-zero-std group.

Plain functions with TRL's reward signature `f(completions, **columns) -> list[float]`; completions
are chat message lists (`[{"role": "assistant", "content": ...}]`) or plain strings.

>>> correctness_reward([[{"role": "assistant", "content": "2 + 2 = 4\\n#### 4"}]], gold=["4"])
[1.0]
>>> format_reward(["2 + 2 = 4\\n#### 4", "4", "#### 4 and more"], layout="hash")
[1.0, 0.0, 0.25]
"""

from __future__ import annotations

import re

from lorarank.evaluation.gsm8k import extract_answer, is_correct

HASH_LAYOUT = re.compile(r"^(?:.+\n)*#### -?[\d,]+(?:\.\d+)?\s*$", re.DOTALL)
TAGS_LAYOUT = re.compile(r"^\s*<reasoning>.*?</reasoning>\s*<answer>\s*[^<]*?\s*</answer>\s*$", re.DOTALL)


def text_of(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def format_reward(completions, layout: str = "hash", **_) -> list[float]:
    """1 for the exact layout; 0.25 when the marker/tags are there but the layout is not exact; else 0.

    hash: reasoning lines then a final line `#### N`. tags: `<reasoning>..</reasoning><answer>..</answer>`.
    """
    out = []
    for c in completions:
        t = text_of(c).strip()
        if layout == "hash":
            full, partial = bool(HASH_LAYOUT.match(t)), "####" in t
        else:
            full, partial = bool(TAGS_LAYOUT.match(t)), "<answer>" in t and "</answer>" in t
        out.append(1.0 if full else 0.25 if partial else 0.0)
    return out


def correctness_reward(completions, gold, partial_credit: bool = True, **_) -> list[float]:
    """1 when the strict answer is right; with `partial_credit`, 0.5 when only the last number is right
    (the flexible grade: right number, wrong place) — a signal a small model can climb; else 0."""
    out = []
    for c, g in zip(completions, gold):
        t = text_of(c)
        if is_correct(extract_answer(t, "strict"), g):
            out.append(1.0)
        elif partial_credit and is_correct(extract_answer(t, "flexible"), g):
            out.append(0.5)
        else:
            out.append(0.0)
    return out
