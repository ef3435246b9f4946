"""Data: GSM8K (or the synthetic stand-in) as parquet splits, and the prompt layouts (data.smk)."""
