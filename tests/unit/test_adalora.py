"""The adalora arm on the tiny model: real PEFT AdaLoRA driven through real TRL GRPO and SFT trainers.
The allocator runs once per optimizer step and reaches the budget, the orthogonality penalty reaches the
gradients in both regimes, a killed run resumes bit-identically, and the frozen arm is a valid static
allocation."""

import json

import numpy as np
import pandas as pd
import pytest
from safetensors import safe_open

from conftest import ROOT, run_lorarank
from lorarank.allocation.rounding import apportion
from test_train import digest, grpo_argv, kill_at_first_checkpoint, sft_argv, sft_lora
from test_train import grpo as train_grpo

pytestmark = pytest.mark.train

BUDGET, LAYERS, MODULES = 16, 4, 7  # mean target rank 4 per matrix; init_r 6
STEPS, TINIT, TFINAL = 6, 1, 2  # pruning at steps 2-3, the final mask at 4, frozen at 5-6


def adalora_config(model, d, *extra):
    run_lorarank("allocate", "--strategy", "adalora", "--budget", BUDGET, "--num-layers", LAYERS, "--init-r", 6,
                 "--tinit", TINIT, "--tfinal", TFINAL, *extra, "--out", d / "alloc.json")
    run_lorarank("lora-config", "--allocation", d / "alloc.json", "--model", model, "--dropout", 0,
                 "--out", d / "lora.json", "--verify")
    return d / "lora.json"


@pytest.fixture(scope="module")
def ada_lora(warm_model, tmp_path_factory):
    return adalora_config(warm_model / "final", tmp_path_factory.mktemp("adalora"), "--lr-scale", 2)


def grpo(*args, steps=STEPS):
    return train_grpo(*args, steps=steps)


def sft(*args, steps=STEPS):
    return sft_lora(*args, steps=steps)


@pytest.fixture(scope="module")
def ada_run(warm_model, ada_lora, synth_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("adalora-grpo") / "run"
    grpo(warm_model / "final", ada_lora, synth_data / "train.parquet", out)
    return out


def test_lora_config_matches_the_static_arms(ada_lora, warm_model):
    doc = json.loads(ada_lora.read_text())
    kw = doc["lora_config"]
    assert doc["adapter"] == "adalora" and doc["target_budget"] == BUDGET * MODULES and doc["lr_scale"] == 2
    assert kw["init_r"] == 6 and kw["target_r"] == BUDGET // LAYERS
    # ratio policy, k = 2: a static arm's scaling is 2; AdaLoRA's is lora_alpha / init_r
    assert kw["lora_alpha"] / kw["init_r"] == 2.0 and {m["scaling"] for m in doc["modules"]} == {2.0}
    assert len(doc["modules"]) == LAYERS * MODULES
    assert doc["expected_trainable_params"] == sum(6 * (m["in_features"] + m["out_features"] + 1) for m in doc["modules"])


def test_allocator_reaches_the_budget_at_total_step_minus_tfinal(ada_run):
    ranks = pd.read_parquet(ada_run / "ranks.parquet")
    per_step = ranks.groupby("step").agg(total=("rank", "sum"), budget=("budget", "first"))
    freeze = STEPS - TFINAL
    # step 0 as built (init_r everywhere), every pruning step, and the final mask; nothing after it
    assert per_step.index.tolist() == [0, *range(TINIT + 1, freeze + 1)]
    assert per_step.loc[0, "total"] == 6 * LAYERS * MODULES
    assert per_step["budget"].is_monotonic_decreasing
    assert per_step.loc[freeze, "budget"] == BUDGET * MODULES
    assert (per_step["total"] == per_step["budget"]).all()  # each mask keeps exactly the scheduled budget
    run = json.loads((ada_run / "run.json").read_text())
    info = run["adapter_info"]
    assert info["allocator_calls"] == STEPS and info["freeze_step"] == freeze
    assert info["rank_total_final"] == BUDGET * MODULES and info["initial_budget"] == 6 * LAYERS * MODULES
    assert info["trainable_params"] > info["effective_params_final"]
    assert run["learning_rate"] == pytest.approx(2 * 5e-4)  # lr_scale x the GRPO default
    # the final adapter is saved at the live ranks: PEFT's compact form
    with safe_open(ada_run / "final" / "adapter_model.safetensors", "pt") as f:
        e_sizes = [f.get_slice(k).get_shape()[0] for k in f.keys() if ".lora_E" in k]
    assert sum(e_sizes) == BUDGET * MODULES
    final = ranks[ranks.step == freeze].sort_values(["layer", "module"])
    assert sorted(e_sizes) == sorted(final["rank"].tolist())


def test_every_adalora_matrix_is_profiled(ada_run):
    df = pd.read_parquet(ada_run / "grad_norms.parquet")
    assert set(df["matrix"]) == {"A", "E", "B", "G"}
    assert len(df) == STEPS * 4 * LAYERS * MODULES
    assert (df[df.matrix == "G"].groupby("step")["grad_norm"].sum() > 0).all()


def test_the_final_adapter_evaluates(ada_run, warm_model, synth_data, tmp_path):
    run_lorarank("evaluate", "--model", warm_model / "final", "--adapter", ada_run / "final",
                 "--data", synth_data / "test.parquet", "--n", 4, "--max-new-tokens", 16, "--out", tmp_path / "ev")
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["identity"]["strategy"] == "adalora"
    assert metrics["adapter_info"]["rank_total_final"] == BUDGET * MODULES


def test_update_and_allocate_runs_once_per_optimizer_step_not_per_micro_batch(warm_model, ada_lora, synth_data, tmp_path):
    """A real transformers Trainer with two micro-batches per optimizer step: the allocator sees each step
    once, numbered as PEFT counts them (1..steps), after the optimizer step and before zero_grad."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from lorarank.training.adalora import AdaLoraControl
    from lorarank.allocation.lora import load_model_and_lora, read_lora

    model, tok, _ = load_model_and_lora(str(warm_model / "final"), str(ada_lora), 0, total_step=4)
    control = AdaLoraControl(model)
    seen = []  # (step, gradients still there?) as update_and_allocate sees them
    original = control.tuner.update_and_allocate

    e = dict(control.tuner.model.named_parameters())[next(iter(control.units))]  # E: has a gradient from step 1

    def spy(step):
        seen.append((step, e.grad is not None and bool(e.grad.abs().sum() > 0)))
        return original(step)

    control.tuner.update_and_allocate = spy
    texts = pd.read_parquet(synth_data / "train.parquet")["answer"].tolist()[:32]
    rows = [tok(t, truncation=True, max_length=48) for t in texts]
    args = TrainingArguments(output_dir=str(tmp_path / "t"), max_steps=4, per_device_train_batch_size=4,
                             gradient_accumulation_steps=2, learning_rate=1e-3, report_to=[], use_cpu=True,
                             save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[control],
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    micro = []
    trainer.training_step = (lambda f: lambda *a, **k: micro.append(1) or f(*a, **k))(trainer.training_step)
    trainer.train()
    assert len(micro) == 8
    assert [s for s, _ in seen] == [1, 2, 3, 4] and control.calls == [1, 2, 3, 4]
    assert all(has_grad for _, has_grad in seen)  # before zero_grad: the importance scores need them
    assert control.pattern is not None and sum(control.live_ranks().values()) == BUDGET * MODULES  # frozen at step 2


@pytest.mark.parametrize("regime", ["grpo", "sft"])
def test_orthogonality_penalty_reaches_the_gradients(regime, warm_model, synth_data, tmp_path):
    """AdaLoRA starts with E = 0, so at step 1 the training loss gives P and Q no gradient at all: what they
    get is exactly orth_reg_weight x the penalty's gradient, in GRPO (whose loss PEFT never regularises)
    and in SFT alike (without the penalty they would be exactly 0)."""
    import torch

    from lorarank.training.adalora import AdaLoraControl
    from lorarank.allocation.lora import load_model_and_lora

    lora = adalora_config(warm_model / "final", tmp_path, "--orth-reg-weight", "0.5")
    out = tmp_path / regime
    (grpo if regime == "grpo" else sft)(warm_model / "final", lora, synth_data / "train.parquet", out, steps=4)
    df = pd.read_parquet(out / "grad_norms.parquet")
    got = df[(df.step == 1) & df.matrix.isin(["A", "B"])].set_index(["layer", "module", "matrix"])["grad_norm"]
    # the same initial adapter as the runs (seed 7), and the penalty's own gradient on it
    model, _, _ = load_model_and_lora(str(warm_model / "final"), str(lora), 7, total_step=4)
    control = AdaLoraControl(model)
    control.weight = 0.5
    control.penalty().backward()
    expected = {}
    for name, p in control.pairs:
        layer = int(name.split("layers.")[1].split(".")[0])
        module = name.split(".lora_")[0].rsplit(".", 1)[1]
        expected[(layer, module, "A" if ".lora_A." in name else "B")] = float(torch.linalg.vector_norm(p.grad))
    assert len(got) == len(expected) == 2 * LAYERS * MODULES
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-4)


def test_penalty_is_pefts_regulariser(warm_model, ada_lora):
    """Ours equals what PEFT adds to a labels-computed loss (its formula, counted once)."""
    import torch

    from lorarank.training.adalora import AdaLoraControl
    from lorarank.allocation.lora import load_model_and_lora

    model, tok, _ = load_model_and_lora(str(warm_model / "final"), str(ada_lora), 0, total_step=STEPS)
    ids = tok("12 + 30 = 42", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        with_peft = model(input_ids=ids, labels=ids).loss
        control = AdaLoraControl(model)  # switches PEFT's copy off
        without = model(input_ids=ids, labels=ids).loss
        ours = control.penalty()
    assert float(ours) > 0
    torch.testing.assert_close(with_peft - without, ours, rtol=1e-5, atol=1e-6)


def test_allocator_state_is_restored_onto_each_parameters_device(warm_model, ada_lora, tmp_path):
    """The checkpointed importance EMAs are read on the CPU; each must land where its parameter lives (on a
    GPU, PEFT's next update_ipt would otherwise mix devices). `meta` stands in for a GPU here."""
    import torch

    from lorarank.allocation.lora import load_model_and_lora
    from lorarank.training.adalora import AdaLoraControl

    model, _, _ = load_model_and_lora(str(warm_model / "final"), str(ada_lora), 0, total_step=STEPS)
    control = AdaLoraControl(model)
    params = dict(control.tuner.model.named_parameters())
    moved = [n for n in params if ".lora_" in n][:3]
    for table in (control.allocator.ipt, control.allocator.exp_avg_ipt, control.allocator.exp_avg_unc):
        table.update({n: torch.ones_like(params[n]) for n in moved})
    control.save(tmp_path)
    for n in moved:  # each parameter replaced by one on `meta`, where the model would have put it
        owner_name, _, attr = n.rpartition(".")
        owner = control.tuner.model.get_submodule(owner_name)
        on_meta = torch.nn.Parameter(torch.empty_like(params[n], device="meta"))
        if isinstance(owner, torch.nn.ParameterDict):
            owner[attr] = on_meta
        else:
            setattr(owner, attr, on_meta)
    control.load(tmp_path)
    for table in (control.allocator.ipt, control.allocator.exp_avg_ipt, control.allocator.exp_avg_unc):
        assert {n: table[n].device.type for n in moved} == {n: "meta" for n in moved}


def test_killed_adalora_run_resumes_bit_identically(ada_run, warm_model, ada_lora, synth_data, tmp_path):
    out = tmp_path / "killed"
    assert kill_at_first_checkpoint(
        out, "train", "--model", warm_model / "final", "--lora", ada_lora, "--data", synth_data / "train.parquet",
        "--steps", STEPS, "--prompts-per-step", 4, "--generations", 4, "--max-completion-length", 40,
        "--save-steps", 2, "--seed", 7), "no checkpoint appeared before the run ended"
    assert (out / "checkpoints" / "checkpoint-2" / "adalora_state.safetensors").is_file()
    grpo(warm_model / "final", ada_lora, synth_data / "train.parquet", out)
    assert json.loads((out / "run.json").read_text())["resumed_from"].endswith("checkpoint-2")
    assert digest(out / "final" / "adapter_model.safetensors") == digest(ada_run / "final" / "adapter_model.safetensors")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "ranks.parquet"), pd.read_parquet(ada_run / "ranks.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(out / "grad_norms.parquet"), pd.read_parquet(ada_run / "grad_norms.parquet"))


def test_adalora_sft_runs_and_is_bit_identical(warm_model, ada_lora, synth_data, tmp_path):
    for name in ("a", "b"):
        sft(warm_model / "final", ada_lora, synth_data / "train.parquet", tmp_path / name)
    assert digest(tmp_path / "a/final/adapter_model.safetensors") == digest(tmp_path / "b/final/adapter_model.safetensors")
    ranks = pd.read_parquet(tmp_path / "a" / "ranks.parquet")
    assert ranks[ranks.step == STEPS - TFINAL]["rank"].sum() == BUDGET * MODULES
    assert json.loads((tmp_path / "a" / "run.json").read_text())["identity"]["kind"] == "sft"


def test_frozen_final_ranks_are_a_verified_static_arm(ada_run, warm_model, tmp_path):
    out = tmp_path / "final.json"
    run_lorarank("allocate", "--strategy", "adalora-final", "--budget", BUDGET, "--num-layers", LAYERS,
                 "--rank-log", ada_run / "ranks.parquet", "--out", out)
    doc = json.loads(out.read_text())
    assert doc["granularity"] == "module" and doc["profile"]["step"] == STEPS - TFINAL
    flat = [r for layer in doc["ranks"] for r in layer.values()]
    assert sum(flat) == BUDGET * MODULES and min(flat) >= 1
    final = pd.read_parquet(ada_run / "ranks.parquet").query(f"step == {STEPS - TFINAL}")
    live = {(int(r.layer), r.module): int(r.rank) for r in final.itertuples()}
    # the live ranks apportioned to the exact budget within [min_rank, max_rank] (the reference is computed here,
    # from the rank log, in the allocation's own unit order); where none is below min_rank, AdaLoRA's ranks exactly
    units = [(layer, module) for layer, modules in enumerate(doc["ranks"]) for module in modules]
    assert sorted(units) == sorted(live)
    want = apportion([live[u] for u in units], BUDGET * MODULES, doc["params"]["min_rank"], doc["params"]["max_rank"])
    assert [doc["ranks"][layer][module] for layer, module in units] == want
    assert (want == [live[u] for u in units]) == (min(live.values()) >= 1)
    run_lorarank("lora-config", "--allocation", out, "--model", warm_model / "final", "--dropout", 0,
                 "--out", tmp_path / "lora.json", "--verify")
    lora = json.loads((tmp_path / "lora.json").read_text())
    assert lora["verified"] and sum(m["r"] for m in lora["modules"]) == BUDGET * MODULES


@pytest.mark.parametrize("case,expected", [
    ("deepspeed", "cannot run under DeepSpeed"),
    ("schedule", "leaves no pruning phase"),
])
def test_bad_adalora_runs_train_nothing(case, expected, cli, warm_model, ada_lora, synth_data, tmp_path):
    """In this process (`cli`): refused before the model loads."""
    out = tmp_path / "run"
    extra = ["--deepspeed", f"{ROOT}/config/deepspeed/zero2.json"] if case == "deepspeed" else []
    for argv in (grpo_argv, sft_argv):
        code, _, err = cli(*argv(warm_model / "final", ada_lora, synth_data / "train.parquet", out, *extra,
                                 steps=TINIT + TFINAL if case == "schedule" else STEPS))
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and expected in lines[0], err
        assert not out.exists()


def test_init_r_is_one_check_for_the_allocation_and_its_lora_config(cli, tmp_path, model_json):
    """AdaLoRA's init_r must start above the mean target rank: `allocate` refuses the flag, `lora-config` a
    hand-edited allocation, with the same check (lorarank.allocation.adalora_settings)."""
    args = ("--strategy", "adalora", "--budget", BUDGET, "--num-layers", LAYERS)
    code, _, err = cli("allocate", *args, "--init-r", 4, "--out", tmp_path / "a.json")
    assert code == 2 and "--init-r 4 is not above the mean target rank 4 (--budget 16 over 4 layers)" in err
    assert cli("allocate", *args, "--init-r", 6, "--out", tmp_path / "a.json")[0] == 0
    doc = json.loads((tmp_path / "a.json").read_text())
    doc["params"]["init_r"] = 4
    (tmp_path / "a.json").write_text(json.dumps(doc))
    code, _, err = cli("lora-config", "--allocation", tmp_path / "a.json", "--model", model_json("llama-tiny"),
                       "--out", tmp_path / "l.json")
    assert code == 2 and "the allocation's init_r 4 is not above the mean target rank 4:" in err
