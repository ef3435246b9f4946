"""The default miniature's GRPO learns: its uniform arm, run by Snakemake from config/config.yaml reduced
to that one arm and seed (the warm-up and the GRPO settings as they ship), earns more reward at the end
of training than at the start, by more than three standard errors of the step-to-step noise. Opt-in
(`pytest --learning`; `make test`, and so CI, passes it): it is the suite's longest single run."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, edited_config, snakemake

from lorarank.report.analysis import trend
from lorarank.training.regimes import signal

pytestmark = [pytest.mark.dag, pytest.mark.learning]

RUN = "results/default/runs/grpo/uniform/ratio/lr0.001/seed0"


def test_the_uniform_arm_reward_rises_over_training(tmp_path):
    def one_arm(cfg):
        cfg["regimes"], cfg["allocation"]["strategies"], cfg["seeds"] = ["grpo"], ["uniform"], [0]

    config = edited_config(tmp_path, one_arm, base=Path(ROOT) / "config/config.yaml")
    r = snakemake(tmp_path, f"{RUN}/run.json", configfile=config, apptainer=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    log = tmp_path / RUN / "trainer_log.jsonl"
    t = trend(log, signal("grpo"))
    assert t["steps"] == 40  # the default's steps, all logged
    rewards = [r[signal("grpo")] for r in map(json.loads, log.read_text().splitlines()) if signal("grpo") in r]
    first, last = np.array(rewards[:10]), np.array(rewards[-10:])  # the quarters `trend` reports
    assert (first.mean(), last.mean()) == pytest.approx((t["first_quarter"], t["last_quarter"]))
    # each step's mean reward is one draw of the policy's reward: the quarters' difference against its noise
    se = np.sqrt(first.var(ddof=1) / len(first) + last.var(ddof=1) / len(last))
    assert last.mean() - first.mean() > 3 * se, (rewards, se)
