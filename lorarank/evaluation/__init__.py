"""Evaluation: greedy generation and the GSM8K grader (evaluate.smk)."""
