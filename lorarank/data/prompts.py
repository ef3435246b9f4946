"""The prompt and answer layouts shared by SFT, GRPO and evaluation (one place, so they agree).

Two layouts, a run setting:
  hash  the GSM8K layout: reasoning lines, then `#### N` (what the study's small models emit);
  tags  `<reasoning>...</reasoning><answer>N</answer>` (the study's format reward).
"""

from __future__ import annotations

import re

LAYOUTS = ("hash", "tags")

SYSTEM_PROMPTS = {
    "hash": "Solve the math word problem step by step. End with a line '#### <number>' giving the final answer.",
    "tags": ("Solve the math word problem. Respond in the format:\n<reasoning>\n...\n</reasoning>\n"
             "<answer>\n...\n</answer>"),
}

CALCULATOR = re.compile(r"<<[^>]*>>")

# ChatML, as Qwen2's own template writes it; the tiny model's tokenizer ships this template.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def messages(question: str, layout: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPTS[layout]}, {"role": "user", "content": question}]


def target(solution: str, layout: str) -> str:
    """The completion supervised training teaches: the solution in `layout`, calculator marks removed.
    A solution without a '####' line (an informal ending) keeps its ending, in either layout."""
    text = CALCULATOR.sub("", solution).strip()
    if "####" not in text:
        return text if layout == "hash" else f"<reasoning>\n{text}\n</reasoning>"
    body, _, final = text.rpartition("####")
    body, final = body.strip(), final.strip()
    if layout == "hash":
        return f"{body}\n#### {final}"
    return f"<reasoning>\n{body}\n</reasoning>\n<answer>\n{final}\n</answer>"
