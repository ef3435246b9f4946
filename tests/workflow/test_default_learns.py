"""The default miniature's GRPO learns: its uniform arm, run by Snakemake from config/config.yaml reduced
to that one arm and seed (the warm-up and the GRPO settings as they ship), earns more reward at the end
of training than at the start."""

from pathlib import Path

import pytest
from conftest import ROOT, edited_config, snakemake

from lorarank.report.analysis import trend
from lorarank.training.regimes import signal

pytestmark = pytest.mark.dag

RUN = "results/default/runs/grpo/uniform/ratio/lr0.001/seed0"


def test_the_uniform_arm_reward_rises_over_training(tmp_path):
    def one_arm(cfg):
        cfg["regimes"], cfg["allocation"]["strategies"], cfg["seeds"] = ["grpo"], ["uniform"], [0]

    config = edited_config(tmp_path, one_arm, base=Path(ROOT) / "config/config.yaml")
    r = snakemake(tmp_path, f"{RUN}/run.json", configfile=config, apptainer=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    t = trend(tmp_path / RUN / "trainer_log.jsonl", signal("grpo"))
    assert t["steps"] == 40  # the default's steps, all logged
    assert t["last_quarter"] > t["first_quarter"], t
