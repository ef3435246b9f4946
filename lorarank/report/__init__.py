"""Analysis and report: gradient statistics, accuracy statistics, findings and figures (summary.smk)."""
