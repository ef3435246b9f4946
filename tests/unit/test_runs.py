"""What a training run resumes from and which DeepSpeed configs it accepts, without training
(lorarank.training.runs; the real resumes: test_train.py, test_adalora.py, test_slurm.py)."""

import json

import pytest

from conftest import ROOT
from lorarank.errors import UserError
from lorarank.training.runs import MARKER, deepspeed_config, newest_checkpoint


def checkpoint(out, name, complete=True):
    d = out / "checkpoints" / name
    d.mkdir(parents=True)
    if complete:  # the marker is the last file a checkpoint gets (runs.CheckpointGradLog)
        (d / MARKER).write_text("{}")
    return d


def test_the_newest_complete_checkpoint_is_resumed(tmp_path):
    """Newest by step number (9 sorts after 10 as text), and a checkpoint without its marker, one the kill
    interrupted, is never the one."""
    assert newest_checkpoint(tmp_path) is None
    for name in ("checkpoint-2", "checkpoint-9", "checkpoint-10", "checkpoint-x", "checkpoint-3.bak"):
        checkpoint(tmp_path, name)
    checkpoint(tmp_path, "checkpoint-12", complete=False)
    assert newest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "checkpoint-10"


@pytest.mark.parametrize("doc,expected", [
    ({"zero_optimization": {"stage": 3}}, "ZeRO-3 needs zero_optimization.stage3_gather_16bit_weights_on_model_save"),
    ({"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": "true"}}, "ZeRO-3 needs"),
    ([{"zero_optimization": {"stage": 2}}], "must hold a JSON object"),
])
def test_a_deepspeed_config_that_would_not_save_safetensors_is_refused_before_training(doc, expected, tmp_path, cli):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=expected):
        deepspeed_config(str(path))
    # through the command, before it reads a model, an allocation or data (none of these exist)
    code, _, err = cli("train", "--model", tmp_path / "m", "--lora", tmp_path / "l.json", "--data", tmp_path / "d",
                       "--out", tmp_path / "out", "--deepspeed", path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_the_shipped_deepspeed_configs_are_accepted():
    for stage in (2, 3):
        cfg = deepspeed_config(f"{ROOT}/config/deepspeed/zero{stage}.json")
        assert cfg["zero_optimization"]["stage"] == stage
