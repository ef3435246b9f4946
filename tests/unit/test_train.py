"""GRPO training on the tiny model: real TRL, real PEFT, real DeepSpeed; the gradient log is checked
against the Trainer's own pre-clip total norm, across paths, runs and an interruption."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, child_env, run_lorarank

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def lora_json(warm_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("lora")
    run_lorarank("allocate", "--strategy", "random", "--budget", 16, "--num-layers", 4, "--low", 2, "--high", 6,
                 "--seed", 1, "--out", d / "alloc.json")
    run_lorarank("lora-config", "--allocation", d / "alloc.json", "--model", warm_model / "final",
                 "--dropout", 0, "--out", d / "lora.json", "--verify")
    return d / "lora.json"


def grpo_argv(model, lora, data, out, *extra, steps=4) -> list:
    return ["train", "--model", model, "--lora", lora, "--data", data, "--out", out, "--steps", steps,
            "--prompts-per-step", 4, "--generations", 4, "--max-completion-length", 40, "--save-steps", 2,
            "--seed", 7, *extra]


def grpo(model, lora, data, out, *extra, steps=4, env=None, check=True):
    return run_lorarank(*grpo_argv(model, lora, data, out, *extra, steps=steps), env=env, check=check)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def plain_run(warm_model, lora_json, synth_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo") / "plain"
    grpo(warm_model / "final", lora_json, synth_data / "train.parquet", out)
    return out


def test_gradients_are_logged_and_nonzero_from_step_2(plain_run, lora_json):
    df = pd.read_parquet(plain_run / "grad_norms.parquet")
    lora = json.loads(lora_json.read_text())
    assert sorted(df["step"].unique()) == [1, 2, 3, 4]
    assert len(df) == 4 * 3 * len(lora["modules"])  # every A and B matrix, and each projection's G, at every step
    assert str(df["step"].dtype) == "int32" and str(df["grad_norm"].dtype) == "float32"
    step1 = df[df.step == 1]
    assert (step1[step1.matrix == "A"]["grad_norm"] == 0).all()  # B starts at zero
    later = df[df.step >= 2]
    assert (later.groupby("step")["grad_norm"].sum() > 0).all()
    assert (later[later.matrix == "A"]["grad_norm"] > 0).mean() > 0.9
    assert (df[df.matrix == "G"]["grad_norm"] > 0).all()  # the frozen weights' gradient exists from step 1
    ranks = {(m["layer"], m["module"]): m["r"] for m in lora["modules"]}
    assert all(ranks[(l, m)] == r for l, m, r in df[["layer", "module", "rank"]].drop_duplicates().itertuples(index=False))


def test_logged_norms_are_pre_clip(plain_run):
    """The Trainer logs the total pre-clip norm; ours must combine to it at every step."""
    df = pd.read_parquet(plain_run / "grad_norms.parquet")
    df = df[df.matrix.isin(["A", "B"])]  # the trainable parameters (G is the frozen weights')
    ours = df.assign(sq=df.grad_norm.astype(float) ** 2).groupby("step")["sq"].sum() ** 0.5
    log = [json.loads(l) for l in (plain_run / "trainer_log.jsonl").read_text().splitlines()]
    theirs = {r["step"] if "step" in r else i + 1: r["grad_norm"] for i, r in enumerate(x for x in log if "grad_norm" in x)}
    np.testing.assert_allclose([ours[s] for s in sorted(theirs)], [theirs[s] for s in sorted(theirs)], rtol=1e-4)


def test_outputs_and_run_record(plain_run, lora_json, synth_data):
    assert (plain_run / "final" / "adapter_model.safetensors").is_file()
    assert not list((plain_run / "final").glob("*.bin"))
    run = json.loads((plain_run / "run.json").read_text())
    lora = json.loads(lora_json.read_text())
    ident = run["identity"]
    assert (ident["kind"], ident["strategy"], ident["seed"]) == ("grpo", "random", 7) and run["steps"] == 4
    assert ident["alpha_policy"] == lora["alpha_policy"] and len(ident["model"]["sha256"]) == 64
    assert run["trainable_params"] == run["expected_trainable_params"] == lora["expected_trainable_params"]
    # what a rerun is keyed on: the bytes of the LoRA config and the data it trained on
    assert (run["inputs"]["lora"]["sha256"], run["inputs"]["data"]["sha256"]) == (
        digest(lora_json), digest(synth_data / "train.parquet"))
    assert run["environment"]["packages"]["trl"].startswith("1.")
    assert run["settings"]["steps"] == 4 and "save_steps" not in run["settings"]  # operational: not identity
    log = [json.loads(l) for l in (plain_run / "trainer_log.jsonl").read_text().splitlines()]
    step_logs = [r for r in log if "loss" in r]
    assert len(step_logs) == 4
    for key in ("rewards/format/mean", "rewards/correctness/mean", "reward_std", "grad_norm"):
        assert all(key in r for r in step_logs), key


def test_same_seed_is_bit_identical(plain_run, warm_model, lora_json, synth_data, tmp_path):
    # reporting to a tracker and the checkpoint cadence (2 there, none here) are operational: not a bit changes
    grpo(warm_model / "final", lora_json, synth_data / "train.parquet", tmp_path / "again",
         "--report-to", "tensorboard", "--save-steps", 1000)
    assert list((tmp_path / "again" / "tensorboard").iterdir())
    assert digest(tmp_path / "again" / "final" / "adapter_model.safetensors") == digest(plain_run / "final" / "adapter_model.safetensors")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again" / "grad_norms.parquet"),
                                  pd.read_parquet(plain_run / "grad_norms.parquet"))


def test_clipping_does_not_change_logged_norms(plain_run, warm_model, lora_json, synth_data, tmp_path):
    grpo(warm_model / "final", lora_json, synth_data / "train.parquet", tmp_path / "clip", "--max-grad-norm", "1e-4", steps=2)
    grpo(warm_model / "final", lora_json, synth_data / "train.parquet", tmp_path / "noclip", "--max-grad-norm", 0, steps=2)
    clip = pd.read_parquet(tmp_path / "clip" / "grad_norms.parquet")
    noclip = pd.read_parquet(tmp_path / "noclip" / "grad_norms.parquet")
    first = lambda d: d[d.step == 1].reset_index(drop=True)  # the runs diverge once clipping changed an update
    pd.testing.assert_frame_equal(first(clip), first(noclip))
    total = float(np.sqrt((first(clip).grad_norm.astype(float) ** 2).sum()))
    assert total > 1e-4 * 10  # clipping really bit: the logged norm is far above the clip threshold


def test_deepspeed_zero2_agrees_with_plain(plain_run, warm_model, lora_json, synth_data, tmp_path):
    # no MASTER_PORT: runs.ensure_distributed_env takes a free one (a fixed one collides with a parallel run)
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    grpo(warm_model / "final", lora_json, synth_data / "train.parquet", tmp_path / "ds",
         "--deepspeed", os.path.join(ROOT, "config/deepspeed/zero2.json"), env=env)
    ds = pd.read_parquet(tmp_path / "ds" / "grad_norms.parquet")
    plain = pd.read_parquet(plain_run / "grad_norms.parquet")
    assert len(ds) == len(plain)
    keys = ["step", "layer", "module", "matrix"]
    merged = plain.merge(ds, on=keys, suffixes=("_plain", "_ds"))
    assert len(merged) == len(plain) and (merged.grad_norm_ds[merged.step >= 2] > 0).any()
    assert (merged.matrix == "G").sum() == len(plain) // 3  # the full-weight gradients agree too
    # step 1 has the same weights and completions (only the order of DeepSpeed's sums differs); later steps
    # sample from weights updated by ZeRO-2's flattened optimizer, close enough to draw the same completions
    # here, and the numerics profile's pinned kernels make that so on every x86-64 CPU (another kernel set,
    # e.g. a GPU's, may draw other tokens from step 2 on)
    np.testing.assert_allclose(merged.grad_norm_ds, merged.grad_norm_plain, rtol=1e-5, atol=1e-9)


def kill_at_first_checkpoint(out, *argv) -> bool:
    """Start `python -m lorarank *argv` writing to `out`, SIGTERM it once checkpoint-2 is complete (as a
    preemption would); True if that checkpoint was there."""
    proc = subprocess.Popen([sys.executable, "-m", "lorarank", *map(str, argv), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env({"PYTHONHASHSEED": "0"}))
    marker = out / "checkpoints" / "checkpoint-2" / "lorarank.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    return marker.exists()


def test_sigterm_then_rerun_resumes_bit_identically(plain_run, warm_model, lora_json, synth_data, tmp_path):
    out = tmp_path / "killed"
    assert kill_at_first_checkpoint(
        out, "train", "--model", warm_model / "final", "--lora", lora_json, "--data", synth_data / "train.parquet",
        "--steps", 4, "--prompts-per-step", 4, "--generations", 4, "--max-completion-length", 40, "--save-steps", 2,
        "--seed", 7), "no checkpoint appeared before the run ended"
    assert not (out / "final").exists() and not (out / "grad_norms.parquet").exists()
    grpo(warm_model / "final", lora_json, synth_data / "train.parquet", out)
    run = json.loads((out / "run.json").read_text())
    assert run["resumed_from"].endswith("checkpoint-2")
    df = pd.read_parquet(out / "grad_norms.parquet")
    assert df.groupby("step").size().tolist() == [len(df) // 4] * 4  # each step exactly once
    assert digest(out / "final" / "adapter_model.safetensors") == digest(plain_run / "final" / "adapter_model.safetensors")
    pd.testing.assert_frame_equal(df, pd.read_parquet(plain_run / "grad_norms.parquet"))


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("case,expected", [
    ("lora for another layer count", "is for 28 layers"),
    ("lora module not in the model", "got no LoRA adapter"),
    ("generations do not divide", "do not divide over 3 processes"),
    ("missing data columns", "lacks column(s) question, answer"),
    ("deepspeed json does not parse", "is not valid JSON"),
])
def test_bad_input_trains_nothing(case, expected, cli, monkeypatch, warm_model, lora_json, synth_data, tmp_path):
    """In this process (`cli`): each is refused before a trainer exists, so no process-wide state is made."""
    lora, data, extra = lora_json, synth_data / "train.parquet", []
    doc = json.loads(lora_json.read_text())
    if case.startswith("lora for"):
        doc["model"]["num_layers"] = 28
        lora = _write(tmp_path, "l.json", json.dumps(doc))
    elif case.startswith("lora module"):
        for m in doc["modules"]:
            m["name"] = m["name"].replace("q_proj", "qkv_proj")
        lora = _write(tmp_path, "l.json", json.dumps(doc))
    elif case.startswith("generations"):
        monkeypatch.setenv("WORLD_SIZE", "3")
    elif case.startswith("missing"):
        pd.DataFrame({"text": ["x"]}).to_parquet(tmp_path / "bad.parquet")
        data = tmp_path / "bad.parquet"
    else:
        extra = ["--deepspeed", _write(tmp_path, "ds.json", "{stage: 2")]
    out = tmp_path / "out"
    code, _, err = cli(*grpo_argv(warm_model / "final", lora, data, out, *extra))
    assert code == 2, err[-2000:]
    assert expected in err.strip().splitlines()[-1]
    assert not (out / "final").exists() and not list(out.glob("checkpoints/*"))


def test_sft_warmup_is_profiled_with_the_same_profiler(warm_model):
    df = pd.read_parquet(warm_model / "grad_norms.parquet")
    assert sorted(df["step"].unique()) == list(range(1, 81))
    assert set(df["matrix"]) == {"W"} and df.groupby("step").size().eq(4 * 7).all()  # 4 layers x 7 projections
    assert (df["grad_norm"] > 0).all()
    from lorarank.training import gradlog

    shares = gradlog.shares(gradlog.validate(df))
    assert shares.sum() == pytest.approx(1.0) and len(shares) == 4
    run = json.loads((warm_model / "run.json").read_text())
    assert run["identity"]["kind"] == "warmup" and run["trainable_params"] > 100_000
    assert (warm_model / "final" / "model.safetensors").is_file()


def test_checkpoints_of_another_configuration_are_not_resumed(plain_run, warm_model, lora_json, synth_data, tmp_path):
    """A run killed under one seed, rerun under another (as after a config change): start afresh."""
    out = tmp_path / "switched"
    assert kill_at_first_checkpoint(
        out, "train", "--model", warm_model / "final", "--lora", lora_json, "--data", synth_data / "train.parquet",
        "--steps", 4, "--prompts-per-step", 4, "--generations", 4, "--max-completion-length", 40, "--save-steps", 2,
        "--seed", 8)
    r = grpo(warm_model / "final", lora_json, synth_data / "train.parquet", out)  # seed 7
    assert "another run configuration" in r.stderr
    assert json.loads((out / "run.json").read_text())["resumed_from"] is None
    assert digest(out / "final" / "adapter_model.safetensors") == digest(plain_run / "final" / "adapter_model.safetensors")
    assert not (out / "checkpoints").exists()  # a finished run keeps no checkpoints


# --- LoRA-SFT: the study's contrast arm, with the same profiler and guarantees -----------------------
def sft_argv(model, lora, data, out, *extra, steps=4) -> list:
    return ["sft", "--model", model, "--lora", lora, "--data", data, "--out", out, "--steps", steps,
            "--batch-size", 8, "--lr", "1e-3", "--warmup-steps", 0, "--save-steps", 2, "--seed", 7, *extra]


def sft_lora(model, lora, data, out, *extra, steps=4, check=True, env=None):
    return run_lorarank(*sft_argv(model, lora, data, out, *extra, steps=steps), check=check, env=env)


@pytest.fixture(scope="module")
def sft_run(warm_model, lora_json, synth_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft-lora") / "run"
    sft_lora(warm_model / "final", lora_json, synth_data / "train.parquet", out)
    return out


def test_lora_sft_is_profiled_on_every_metric_and_records_its_identity(sft_run, lora_json):
    df = pd.read_parquet(sft_run / "grad_norms.parquet")
    lora = json.loads(lora_json.read_text())
    assert set(df["matrix"]) == {"A", "B", "G"} and len(df) == 4 * 3 * len(lora["modules"])
    assert (df[df.matrix == "G"]["grad_norm"] > 0).all()
    run = json.loads((sft_run / "run.json").read_text())
    assert (run["identity"]["kind"], run["identity"]["strategy"], run["identity"]["seed"]) == ("sft", "random", 7)
    assert run["trainable_params"] == lora["expected_trainable_params"]
    assert (sft_run / "final" / "adapter_model.safetensors").is_file()


def test_lora_sft_is_bit_identical_on_rerun_and_after_a_kill(sft_run, warm_model, lora_json, synth_data, tmp_path):
    sft_lora(warm_model / "final", lora_json, synth_data / "train.parquet", tmp_path / "again")
    assert digest(tmp_path / "again/final/adapter_model.safetensors") == digest(sft_run / "final/adapter_model.safetensors")
    out = tmp_path / "killed"
    assert kill_at_first_checkpoint(
        out, "sft", "--model", warm_model / "final", "--lora", lora_json, "--data", synth_data / "train.parquet",
        "--steps", 4, "--batch-size", 8, "--lr", "1e-3", "--warmup-steps", 0, "--save-steps", 2, "--seed", 7), \
        "no checkpoint appeared before the run ended"
    sft_lora(warm_model / "final", lora_json, synth_data / "train.parquet", out)
    assert json.loads((out / "run.json").read_text())["resumed_from"].endswith("checkpoint-2")
    assert digest(out / "final/adapter_model.safetensors") == digest(sft_run / "final/adapter_model.safetensors")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "grad_norms.parquet"), pd.read_parquet(sft_run / "grad_norms.parquet"))


def test_deepspeed_zero3_saves_the_gathered_adapter(sft_run, warm_model, lora_json, synth_data, tmp_path):
    """ZeRO-3 partitions the adapter too: final/ holds it gathered (a plain `save_pretrained` wrote this process's
    empty shards: 9 of 56 tensors of shape (0,) here), safetensors only, loadable by PEFT at every module's rank,
    and what the plain path trains."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    # no MASTER_PORT: runs.ensure_distributed_env takes a free one (a fixed one collides with a parallel run)
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    out = tmp_path / "z3"
    sft_lora(warm_model / "final", lora_json, synth_data / "train.parquet", out,
             "--deepspeed", os.path.join(ROOT, "config/deepspeed/zero3.json"), env=env)
    files = sorted(f.name for f in (out / "final").iterdir())
    assert files == sorted(f.name for f in (sft_run / "final").iterdir()) and "training_args.bin" not in files
    ours = load_file(out / "final" / "adapter_model.safetensors")
    plain = load_file(sft_run / "final" / "adapter_model.safetensors")
    lora = json.loads(lora_json.read_text())
    assert sorted(ours) == sorted(plain) and len(ours) == 2 * len(lora["modules"])
    for key, weight in plain.items():
        assert ours[key].shape == weight.shape and ours[key].numel() > 0, key
        torch.testing.assert_close(ours[key], weight, rtol=1e-4, atol=1e-5)  # measured: 5e-7 apart after 4 steps
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(warm_model / "final"), out / "final")
    loaded = {n: p for n, p in model.named_parameters() if ".lora_" in n}
    assert len(loaded) == len(ours)
    for m in lora["modules"]:
        a = next(p for n, p in loaded.items() if f"{m['name']}.lora_A." in n)
        b = next(p for n, p in loaded.items() if f"{m['name']}.lora_B." in n)
        assert a.shape == (m["r"], m["in_features"]) and b.shape == (m["out_features"], m["r"]), m["name"]
        torch.testing.assert_close(b.detach(), ours[f"base_model.model.{m['name']}.lora_B.weight"], rtol=0, atol=0)
    run = json.loads((out / "run.json").read_text())
    assert run["trainable_params"] == lora["expected_trainable_params"]  # whole parameters, not this process's shards
    keys = ["step", "layer", "module", "matrix"]
    merged = pd.read_parquet(sft_run / "grad_norms.parquet").merge(pd.read_parquet(out / "grad_norms.parquet"), on=keys)
    assert len(merged) == 4 * 3 * len(lora["modules"])
    np.testing.assert_allclose(merged.grad_norm_y, merged.grad_norm_x, rtol=1e-5, atol=1e-9)


def test_lora_sft_loss_is_the_completion_tokens_alone(warm_model, lora_json, synth_data, tmp_path):
    """The loss TRL trains on is the mean cross-entropy of the answer's tokens alone: prompt positions carry
    no target, so what follows a prompt token never enters the loss (the mean over all tokens differs)."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from lorarank.allocation.lora import load_model_and_lora
    from lorarank.data.prepare import load_split
    from lorarank.training.sft import SFTSettings, dataset

    model, tok, _ = load_model_and_lora(str(warm_model / "final"), str(lora_json), 0)
    cfg = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=256, packing=False,
                    completion_only_loss=True, report_to=[], use_cpu=True, bf16=False)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=dataset(load_split(synth_data / "train.parquet")[:8], SFTSettings(layout="hash")),
                         processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"]
    scored = labels != -100
    assert 0 < scored.sum() < (batch["attention_mask"] == 1).sum()  # some tokens, not the prompt
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
    completion = scored[:, 1:]
    assert float(loss) == pytest.approx(float(ce[completion].mean()), rel=1e-5)
    everything = batch["attention_mask"][:, 1:] == 1
    assert float(ce[everything].mean()) != pytest.approx(float(loss), rel=1e-3)
