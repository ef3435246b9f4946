"""The numerics profile: the same bits on every x86-64 CPU. A short chain of real commands (tiny model build,
warm-up, 3 GRPO and 3 LoRA-SFT steps, a 20-question evaluation) is compared with digests committed in the
repository; the profile is shown in force in a bare command; a machine that cannot run it is refused.

To update the committed digests after a change that moves the numbers (in the same commit):
    LORARANK_WRITE_DIGESTS=1 python -m pytest tests/unit/test_numerics.py -k chain
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, child_env, run_lorarank

from lorarank.io import sha256_file

DIGESTS = Path(ROOT) / "tests/digests/chain.json"


@pytest.fixture(scope="module")
def chain(synth_data, tiny_model, warm_model, tmp_path_factory):
    """name -> file of every artifact of the chain, in pipeline order (the session's tiny model and warm-up
    are its first links)."""
    d = tmp_path_factory.mktemp("chain")
    start = warm_model / "final"
    run_lorarank("allocate", "--strategy", "uniform", "--budget", 16, "--num-layers", 4, "--out", d / "alloc.json")
    run_lorarank("lora-config", "--allocation", d / "alloc.json", "--model", start, "--dropout", 0,
                 "--out", d / "lora.json", "--verify")
    common = ["--model", start, "--lora", d / "lora.json", "--data", synth_data / "train.parquet", "--steps", 3,
              "--save-steps", 100, "--seed", 3]
    run_lorarank("train", *common, "--prompts-per-step", 4, "--generations", 4, "--max-completion-length", 24,
                 "--out", d / "grpo")
    run_lorarank("sft", *common, "--batch-size", 8, "--out", d / "sft")
    run_lorarank("evaluate", "--model", start, "--adapter", d / "grpo" / "final", "--data", synth_data / "test.parquet",
                 "--n", 20, "--max-new-tokens", 24, "--quiet", "--out", d / "eval")
    return {
        "data/train.parquet": synth_data / "train.parquet",
        "model/model.safetensors": tiny_model / "model.safetensors",
        "warmup/model.safetensors": start / "model.safetensors",
        "warmup/grad_norms.parquet": warm_model / "grad_norms.parquet",
        "grpo/adapter_model.safetensors": d / "grpo/final/adapter_model.safetensors",
        "grpo/grad_norms.parquet": d / "grpo/grad_norms.parquet",
        "sft/adapter_model.safetensors": d / "sft/final/adapter_model.safetensors",
        "sft/grad_norms.parquet": d / "sft/grad_norms.parquet",
        "eval/predictions.parquet": d / "eval/predictions.parquet",
    }


@pytest.mark.train
def test_chain_matches_the_committed_digests(chain):
    got = {name: sha256_file(path) for name, path in chain.items()}
    if os.environ.get("LORARANK_WRITE_DIGESTS"):
        DIGESTS.write_text(json.dumps(got, indent=1) + "\n")
        pytest.skip(f"wrote {DIGESTS}")
    want = json.loads(DIGESTS.read_text())
    assert list(want) == list(got), "the chain's artifacts changed: rewrite the digests (see the module docstring)"
    first = next((name for name in want if got[name] != want[name]), None)
    assert first is None, (f"first artifact that differs from the committed digests: {first} "
                           f"({sum(got[n] != want[n] for n in want)} of {len(want)} differ)")


@pytest.mark.train
def test_the_profile_is_in_force_in_a_bare_command_and_recorded(chain):
    """`lorarank train` by hand, with no flag and none of the profile's variables in its environment
    (`run_lorarank` leaves them out): the run record shows the pinned kernel level torch reported."""
    rec = json.loads((chain["grpo/grad_norms.parquet"].parent / "run.json").read_text())
    num = rec["environment"]["numerics"]
    assert (num["kernels"], num["threads"], num["deterministic"]) == ("portable", 2, True)
    assert num["torch_cpu_capability"] == "AVX2" and num["torch_threads"] == 2 and num["deterministic_algorithms"]
    assert num["env"]["MKL_CBWR"] == "COMPATIBLE,STRICT" and num["env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert rec["numerics"] == {"kernels": "portable", "threads": 2, "deterministic": True}  # part of the resume key
    metrics = json.loads((chain["eval/predictions.parquet"].parent / "metrics.json").read_text())
    assert metrics["environment"]["numerics"]["torch_cpu_capability"] == "AVX2"


def native_level() -> str:
    """The kernel level torch picks on this CPU when nothing pins it (a clean environment)."""
    env = {k: v for k, v in child_env().items() if k != "ATEN_CPU_CAPABILITY"}
    return subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                          capture_output=True, text=True, env=env, check=True).stdout.strip()


@pytest.mark.train
def test_native_kernels_are_the_cpus_own_and_recorded(synth_data, warm_model, tmp_path):
    """`--kernels native` undoes the pins even when the caller's environment carries them."""
    pins = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    run_lorarank("evaluate", "--model", warm_model / "final", "--data", synth_data / "test.parquet", "--n", 4,
                 "--max-new-tokens", 8, "--quiet", "--kernels", "native", "--threads", 1, "--out", tmp_path, env=pins)
    num = json.loads((tmp_path / "metrics.json").read_text())["environment"]["numerics"]
    assert num["kernels"] == "native" and num["env"]["MKL_CBWR"] is None and num["torch_threads"] == 1
    assert num["torch_cpu_capability"] == native_level()


def test_a_cpu_without_avx2_is_refused_in_one_line(cli, tmp_path, monkeypatch):
    """The portable kernels need AVX2 and FMA: a CPU without them (here a cpuinfo without the flags) is refused
    before anything loads, naming the flag and the way out."""
    from lorarank import numerics

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx\n")
    monkeypatch.setattr(numerics, "CPUINFO", str(fake))
    code, out, err = cli("evaluate", "--model", tmp_path, "--data", tmp_path / "x.parquet", "--out", tmp_path / "o")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["lorarank evaluate: error: --kernels portable needs a CPU with AVX2 and FMA, "
                                        "and this one lacks AVX2, FMA: use --kernels native (bits then match only on "
                                        "the same kind of CPU)"]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "ppc64le", "riscv64", "i686", "x86"])
def test_the_portable_kernels_run_only_on_x86_64(cli, tmp_path, monkeypatch, machine):
    """README: "a machine that is not x86-64, is refused in one line naming the way out". The CPU here lists AVX2
    and FMA, so the machine alone decides; x86-64 under either name is accepted, and native kernels run anywhere."""
    from lorarank import numerics

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n")
    monkeypatch.setattr(numerics, "CPUINFO", str(fake))
    for accepted in ("x86_64", "AMD64"):  # Linux's name, and Windows'
        monkeypatch.setattr(numerics.platform, "machine", lambda: accepted)
        numerics.Numerics().check()
    monkeypatch.setattr(numerics.platform, "machine", lambda: machine)
    numerics.Numerics(kernels="native").check()
    code, out, err = cli("evaluate", "--model", tmp_path, "--data", tmp_path / "x.parquet", "--out", tmp_path / "o")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"lorarank evaluate: error: --kernels portable pins x86-64 kernels (AVX2), but "
                                        f"this machine is {machine}: use --kernels native (bits then match only on the "
                                        f"same kind of CPU)"]
    assert not (tmp_path / "o").exists()


def test_the_workflow_refuses_it_naming_the_config_key(tmp_path, monkeypatch):
    import yaml

    from lorarank import numerics, workflow_config
    from lorarank.errors import UserError

    fake = tmp_path / "cpuinfo"
    fake.write_text("flags\t\t: fpu sse sse2 avx avx2\n")  # AVX2 without FMA
    monkeypatch.setattr(numerics, "CPUINFO", str(fake))
    from snakemake.utils import validate

    config = yaml.safe_load((Path(ROOT) / "config/config.yaml").read_text())
    validate(config, str(Path(ROOT) / "workflow/schemas/config.schema.yaml"))
    with pytest.raises(UserError, match=r"^numerics.kernels portable needs a CPU with AVX2 and FMA, and this one "
                                        r"lacks FMA: use numerics.kernels native"):
        workflow_config.check(config)
    config["numerics"]["kernels"] = "native"
    workflow_config.check(config)  # the way out works


def test_every_thread_pool_of_a_job_is_the_profiles():
    """A Slurm job is given numerics.threads cores per process: torch, OpenMP, MKL and the tokenizers' Rust pool
    each get that many, none the node's core count."""
    from lorarank.numerics import Numerics, env

    assert {k: v for k, v in env(Numerics(threads=7)).items() if k.endswith("_THREADS")} == \
        {"OMP_NUM_THREADS": "7", "MKL_NUM_THREADS": "7", "RAYON_NUM_THREADS": "7"}


def test_a_process_whose_torch_already_chose_other_kernels_is_refused():
    """README: "a process in which torch already chose other kernels is refused". In a fresh process torch runs
    a kernel at the level its environment names (DEFAULT: no vector kernels, not the profile's AVX2); applying
    the portable profile afterwards must refuse, in one line naming the way out, rather than record bits it
    cannot promise. A second, different profile in a process that has one is refused too."""
    code = """
import torch
from lorarank import numerics
from lorarank.errors import UserError
(torch.ones(8) @ torch.ones(8)).item()
try:
    numerics.apply(numerics.Numerics())
    print("applied")
except UserError as e:
    print("refused:", e)
"""
    def fresh(script, **env):  # a new Python process, with the environment as it was before this session's profile
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300,
                           env=child_env({"PYTHONPATH": ROOT, **env}))
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.strip()

    assert fresh(code, ATEN_CPU_CAPABILITY="default") == ("refused: --kernels portable: torch already runs DEFAULT kernels in this process (a "
                                "kernel ran before the profile was applied); start it with ATEN_CPU_CAPABILITY=avx2 "
                                "in the environment")
    switch = """
from lorarank import numerics
from lorarank.errors import UserError
numerics.apply(numerics.Numerics())
try:
    numerics.apply(numerics.Numerics(threads=1))
    print("switched")
except UserError as e:
    print("refused:", e)
"""
    switched = fresh(switch)
    assert switched.startswith("refused: this process already runs under numerics ") and "cannot switch" in switched
