"""argparse `type=` helpers: one clear message naming the value and what is allowed.

Library modules import these (through `lorarank.options`) without importing the CLI.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (a positive integer is required)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive (a positive integer is required)")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (a positive number is required)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive (a positive number is required)")
    return value


def csv_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r} is empty (a comma-separated list is required)")
    return items
