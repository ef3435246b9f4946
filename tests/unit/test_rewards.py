"""GRPO's rewards as the trainer calls them: both layouts' format scores (1, 0.25, 0), correctness with and
without partial credit, and `--no-partial-credit` reaching the reward functions the training command builds.
Expected values are written out by hand from the rules in the README (GRPO rewards), not computed."""

import pytest

from lorarank.training.rewards import correctness_reward, format_reward


def chat(text):
    return [{"role": "assistant", "content": text}]


HASH = {
    "7 * 6 = 42\n#### 42": 1.0,  # reasoning, then the final line
    "#### 42": 1.0,  # the final line alone is the layout
    "7 * 6 = 42\n#### 1,234.5": 1.0,  # a number with separators
    "#### 42\nbecause 7 * 6": 0.25,  # the marker, but not last
    "the answer is #### 42": 0.25,  # the marker inside a line
    "#### forty-two": 0.25,  # the marker without a number
    "42": 0.0,
    "<reasoning>7 * 6</reasoning><answer>42</answer>": 0.0,  # the other layout earns nothing here
}
TAGS = {
    "<reasoning>7 * 6 = 42</reasoning>\n<answer>42</answer>": 1.0,
    "  <reasoning>\n7 * 6\n</reasoning> <answer> 42 </answer>  ": 1.0,  # whitespace around is allowed
    "<answer>42</answer>": 0.25,  # no reasoning block
    "<reasoning>7 * 6</reasoning><answer>42</answer> and more": 0.25,  # text after the answer
    "<reasoning>7 * 6</reasoning><answer>42": 0.0,  # the answer never closes
    "7 * 6 = 42\n#### 42": 0.0,
}


@pytest.mark.parametrize("layout,cases", [("hash", HASH), ("tags", TAGS)])
def test_format_reward_scores_each_layout(layout, cases):
    texts = list(cases)
    expected = [cases[t] for t in texts]
    assert format_reward(texts, layout=layout) == expected
    assert format_reward([chat(t) for t in texts], layout=layout) == expected  # chat messages: the same


# completion -> (with partial credit, without): strict = the `#### N` answer, flexible = the last number
CORRECT = {
    "7 * 6 = 42\n#### 42": (1.0, 1.0),  # strictly right
    "7 * 6 = 42\n#### 42.0": (1.0, 1.0),  # the same number
    "7 * 6 is 42": (0.5, 0.0),  # right last number, no marker: the flexible grade only
    "#### 41\nno wait, 42": (0.5, 0.0),  # the marked answer is wrong, the last number right
    "7 * 6 = 42\n#### 41": (0.0, 0.0),  # wrong, and its last number is the wrong one
    "no idea": (0.0, 0.0),
}


@pytest.mark.parametrize("partial", [True, False])
def test_correctness_reward_gives_half_credit_only_for_the_flexible_grade(partial):
    texts = list(CORRECT)
    expected = [CORRECT[t][0 if partial else 1] for t in texts]
    assert correctness_reward([chat(t) for t in texts], gold=["42"] * len(texts), partial_credit=partial) == expected


def test_rewards_are_exact_binary_fractions():
    """(The module's reason for 0.25 and 0.5: a group's std must come out exactly 0 when all rewards tie.)"""
    values = format_reward(list(HASH)) + correctness_reward(list(CORRECT), gold=["42"] * len(CORRECT))
    assert {v.hex() for v in values} <= {0.0.hex(), 0.25.hex(), 0.5.hex(), 1.0.hex()}


@pytest.mark.parametrize("flags,half", [([], 0.5), (["--no-partial-credit"], 0.0)])
def test_the_training_commands_flag_reaches_its_reward_functions(flags, half):
    """`lorarank train [--no-partial-credit] --layout tags` parsed as the workflow calls it, then the reward
    functions the GRPO recipe hands to TRL's GRPOTrainer."""
    from lorarank.cli import build_parser
    from lorarank.options import from_args
    from lorarank.training.train import RECIPE, GRPOSettings

    args = build_parser(["train"]).parse_args(["train", "--model", "m", "--lora", "l.json", "--data", "d.parquet",
                                               "--out", "o", "--layout", "tags", *flags])
    settings = from_args(GRPOSettings, args)
    fmt, correct = RECIPE.trainer_args(settings)["reward_funcs"]
    done = chat("<reasoning>7 * 6</reasoning><answer>42</answer>")
    almost = chat("<reasoning>7 * 6 is 42</reasoning><answer>41</answer>")  # wrong answer, last number 41
    flexible = chat("<reasoning>41, no</reasoning><answer>seven times six</answer> 42")
    assert fmt([done, flexible]) == [1.0, 0.25]
    assert correct([done, almost, flexible], gold=["42"] * 3) == [1.0, 0.0, half]
