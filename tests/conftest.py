"""Shared fixtures: model shapes as config.json files (no download), a CLI runner, gradient logs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is unreachable here; fail fast, never hang
# The numerics profile's variables before torch loads in this process: tests that run torch in-process
# take the kernels the commands take. Subprocesses get the environment as it was (`child_env`): a command
# must apply its profile itself, as it does for a user (lorarank.numerics), or the tests would not see it.
from lorarank.numerics import Numerics, env as numerics_env  # noqa: E402  (standard library only)

_PROFILE = numerics_env(Numerics())
_BEFORE = {k: os.environ[k] for k in _PROFILE if k in os.environ}
os.environ.update(_PROFILE)


def child_env(extra: dict | None = None) -> dict[str, str]:
    """os.environ for a subprocess: without this process's profile variables (their values from before the
    session, if any), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _PROFILE}
    return {**env, **_BEFORE, **(extra or {})}


def pytest_addoption(parser):
    parser.addoption("--order", choices=("file", "reverse", "random"), default="file",
                     help="test order: as the files have them (default), reversed, or shuffled (the files' order and "
                          "the tests' within each file, so a module's fixtures are still made once); every test "
                          "must pass in each")
    parser.addoption("--order-seed", type=int, default=None, help="the shuffle's seed (default: drawn and printed)")
    parser.addoption("--learning", action="store_true",
                     help="also run the tests marked `learning` (a default-sized training run each; `make test` "
                          "passes this, and so CI runs them)")


def _order_seed(config) -> int:
    if config.getoption("--order-seed") is None:
        import random

        config.option.order_seed = random.SystemRandom().randrange(10**6)
    return config.getoption("--order-seed")


def pytest_report_collectionfinish(config, start_path, items):
    # after collection, not in the header: shown under -q too, so a failing random order can be rerun
    if config.getoption("--order") != "file":
        seed = f" --order-seed {_order_seed(config)}" if config.getoption("--order") == "random" else ""
        return f"test order: --order {config.getoption('--order')}{seed}"


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--learning"):
        skip = pytest.mark.skip(reason="a learning check: opt in with --learning (make test does)")
        for item in items:
            if "learning" in item.keywords:
                item.add_marker(skip)
    order = config.getoption("--order")
    if order == "reverse":
        items.reverse()
    elif order == "random":
        import random

        rng = random.Random(_order_seed(config))
        modules: dict = {}
        for item in items:
            modules.setdefault(item.nodeid.split("::")[0], []).append(item)
        groups = list(modules.values())
        rng.shuffle(groups)
        for group in groups:
            rng.shuffle(group)
        items[:] = [item for group in groups for item in group]


@pytest.fixture(scope="session", autouse=True)
def slurm_answers(request):
    """Every Snakemake start imports the Slurm executor plugin, which asks `scontrol show config` (10 s
    timeout). With slurm-wlm installed (make setup) but no cluster running, each Snakemake call of the
    suite waited those 10 s: 34 config checks took 10.2 s each instead of 1.0 s. When the session runs
    Snakemake (a `dag` test), start the one-node cluster first, as the Slurm tests do (idempotent)."""
    if shutil.which("scontrol") is None or not any(i.get_closest_marker("dag") for i in request.session.items):
        return
    r = subprocess.run(["bash", f"{ROOT}/scripts/slurm-up.sh"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr

# Published shapes, written out so that no test needs the hub.
SHAPES = {
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                         tie_word_embeddings=True, max_position_embeddings=32768),
    "llama-tiny": dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, vocab_size=1000),
    "mistral-tiny": dict(model_type="mistral", hidden_size=192, intermediate_size=512, num_hidden_layers=3,
                         num_attention_heads=6, num_key_value_heads=2, vocab_size=1000),
    "qwen3-tiny": dict(model_type="qwen3", hidden_size=128, intermediate_size=384, num_hidden_layers=5,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=1000),
}


def projection_dims(shape: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of the 7 projections from the config numbers alone (independent of the code under test)."""
    h, i = shape["hidden_size"], shape["intermediate_size"]
    hd = shape.get("head_dim", h // shape["num_attention_heads"])
    q, kv = shape["num_attention_heads"] * hd, shape["num_key_value_heads"] * hd
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


@pytest.fixture
def model_json(tmp_path):
    """model_json(name) -> path of a config.json with that published shape."""

    def make(name: str) -> str:
        path = tmp_path / f"{name}.config.json"
        path.write_text(json.dumps(SHAPES[name]))
        return str(path)

    return make


def _numerics_state() -> tuple:
    """What `lorarank.numerics.apply` changes in a process (torch loads here with the profile's variables set)."""
    import torch

    from lorarank import numerics

    return (numerics._applied, torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)


def _restore_numerics(state: tuple) -> None:
    import torch

    from lorarank import numerics

    numerics._applied, threads, deterministic, cudnn_deterministic, cudnn_benchmark = state
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_deterministic, cudnn_benchmark
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def in_process(*argv) -> int:
    """`lorarank *argv` through the real entry point `lorarank.cli.main`, in this process (no ~5 s of imports):
    its exit code. What a command sets for itself does not outlive it. Not for a training run that gets as far as
    its trainer, which keeps process-wide state (accelerate): `run_lorarank`; a refusal before it is fine."""
    from lorarank.cli import main

    saved = dict(os.environ)  # the command sets variables for itself: they must not leak into later tests
    state = _numerics_state()  # nor may a compute command's numerics profile (threads, deterministic mode)
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        return e.code
    finally:
        os.environ.clear()
        os.environ.update(saved)
        _restore_numerics(state)


@pytest.fixture
def cli(capsys):
    """cli(*argv) -> (exit code, stdout, stderr), in this process (`in_process`)."""

    def run(*argv):
        code = in_process(*argv)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def write_run(run_dir, kind="grpo", strategy="uniform", seed=0, policy=("ratio", 2.0)) -> Path:
    """The run.json identity that training writes beside a gradient log (what the analyses read)."""
    from lorarank.study import run_identity

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ident = run_identity(kind, strategy, {"name": policy[0], "value": policy[1]} if policy else None, seed,
                         {"path": "model", "sha256": "0" * 64})
    (run_dir / "run.json").write_text(json.dumps({"identity": ident}))
    return run_dir / "grad_norms.parquet"


def run_groups(*grad_logs) -> list[list[Path]]:
    """Per gradient log written with `write_run` beside it: the run's record, the log, its trainer log (an empty
    one unless the test wrote it), and its rank log where it has one (what `analyze --run` takes)."""
    groups = []
    for log in map(Path, grad_logs):
        trainer = log.with_name("trainer_log.jsonl")
        trainer.touch()
        ranks = [log.with_name("ranks.parquet")] if log.with_name("ranks.parquet").is_file() else []
        groups.append([log.with_name("run.json"), log, trainer, *ranks])
    return groups


def run_args(*grad_logs) -> list:
    """`lorarank analyze`'s `--run` groups of the same runs."""
    return [a for group in run_groups(*grad_logs) for a in ("--run", *group)]


def run_files(*grad_logs):
    """`analysis.RunFiles` of the same runs, for calling `analysis.analyze` directly."""
    from lorarank.report.analysis import RunFiles

    return [RunFiles.parse([str(f) for f in group]) for group in run_groups(*grad_logs)]


def eval_args(*metrics) -> list[str]:
    """`lorarank summarize`'s `--eval` pairs for metrics.json files with their predictions beside them."""
    return [a for m in map(Path, metrics) for a in ("--eval", m, m.with_name("predictions.parquet"))]


def write_grad_log(path, importance: np.ndarray, modules=("q_proj", "v_proj"), seed=0, ranks=None,
                   matrices=("A", "B"), weight: np.ndarray | None = None) -> str:
    """A gradient log whose per-step layer importance is exactly `importance[step, layer]` over `matrices`
    (and, given `weight`, whose 'G' rows have layer importance exactly `weight[step, layer]`).

    Each layer's importance is spread over its matrices with random weights (squared norms sum to
    importance**2), so a correct share computation must combine matrices by sqrt of sum of squares.
    `ranks` (one per layer, default 8; 0 for 'W') fills the rank column.
    """
    rng = np.random.default_rng(seed)
    rows = []
    steps, layers = importance.shape
    groups = [(tuple(matrices), importance)] + ([(("G",), weight)] if weight is not None else [])
    for s in range(steps):
        for layer in range(layers):
            r = 0 if matrices == ("W",) else 8 if ranks is None else ranks[layer]
            for mats, imp in groups:
                w = rng.random(len(modules) * len(mats))
                w /= w.sum()
                k = 0
                for m in modules:
                    for mat in mats:
                        rows.append((s + 1, layer, m, mat, r, float(imp[s, layer] * np.sqrt(w[k]))))
                        k += 1
    df = pd.DataFrame(rows, columns=["step", "layer", "module", "matrix", "rank", "grad_norm"])
    df = df.astype({"step": "int32", "layer": "int16", "rank": "int16", "grad_norm": "float32"})
    df.to_parquet(path)
    return str(path)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The real GSM8K files live beside the project (../shared), never inside it.
GSM8K_DIR = os.environ.get("LORARANK_GSM8K_DIR", os.path.join(os.path.dirname(ROOT), "shared", "data", "gsm8k"))


def gsm8k_rows(split: str) -> list[dict]:
    path = os.path.join(GSM8K_DIR, f"{split}.jsonl")
    assert os.path.isfile(path), f"real GSM8K data not found at {path} (set LORARANK_GSM8K_DIR)"
    with open(path) as f:
        return [json.loads(line) for line in f]


def run_lorarank(*argv, env=None, timeout=900, check=True):
    """`python -m lorarank ...` in a subprocess (training needs a fresh process: accelerate keeps
    process-wide state). Returns the CompletedProcess; with `check`, a failure shows its stderr."""
    import subprocess
    import sys

    full_env = child_env({"PYTHONHASHSEED": "0", **(env or {})})
    r = subprocess.run([sys.executable, "-m", "lorarank", *map(str, argv)], capture_output=True, text=True,
                       env=full_env, timeout=timeout, cwd=ROOT)
    if check and r.returncode != 0:
        raise AssertionError(f"lorarank {argv[0]} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synth"
    assert in_process("prepare-data", "--source", "synthetic", "--n-train", 800, "--n-test", 64, "--seed", 0,
                      "--out", out) == 0
    return out


@pytest.fixture(scope="session")
def tiny_model(synth_data, tmp_path_factory):
    """A tiny Qwen2 (4 layers, 64 wide) with its locally trained tokenizer, random weights."""
    out = tmp_path_factory.mktemp("model") / "base"
    assert in_process("build-model", "--data", synth_data / "train.parquet", "--layers", 4, "--hidden", 64,
                      "--heads", 4, "--kv-heads", 2, "--intermediate", 176, "--out", out) == 0
    return out


@pytest.fixture(scope="session")
def warm_model(tiny_model, synth_data, tmp_path_factory):
    """The tiny model after a short SFT warm-up: it emits the layout, so GRPO rewards differ."""
    out = tmp_path_factory.mktemp("sft") / "run"
    run_lorarank("sft", "--model", tiny_model, "--data", synth_data / "train.parquet", "--steps", 80,
                 "--batch-size", 16, "--lr", "3e-3", "--save-steps", 1000, "--out", out)
    return out


def hub_cache(root: Path, model_dir: Path, repo: str = "lorarank/tiny-test") -> tuple[Path, str]:
    """A TEST DOUBLE of the hub: a local Hugging Face cache (the layout huggingface_hub reads offline)
    holding `model_dir` as `repo` at a fixed commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / "hub" / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file():
            (snap / f.name).write_bytes(f.read_bytes())
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    return root, commit


def repo_copy(tmp_path) -> Path:
    """The repository as a fresh clone would have it: the same files, new paths, new mtimes."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    dest = Path(tmp_path) / "clone"
    for f in files:
        if (Path(ROOT) / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(ROOT) / f, dest / f)
    return dest


def job_stats(text: str) -> dict[str, int]:
    """rule -> jobs, from the job stats table Snakemake prints ({} when nothing is to be done)."""
    if "Nothing to be done" in text or "Job stats:" not in text:
        return {}
    table = text.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


# A stand-in `apptainer` (a test double: Apptainer cannot be installed where the tests run), see
# tests/workflow/standin/apptainer. It appends each call, as JSON, to `log`.
STANDIN = Path(ROOT) / "tests/workflow/standin"


def standin_env(log) -> dict[str, str]:
    """os.environ with the stand-in first on PATH, logging to `log`."""
    return child_env({"PATH": f"{STANDIN}{os.pathsep}{os.environ['PATH']}", "LORARANK_APPTAINER_LOG": str(log)})


# --- Snakemake on the test config -----------------------------------------------------------------
TEST_CONFIG = Path(ROOT) / "tests/workflow/config.test.yaml"
# the Slurm profile's Apptainer arguments (--nv --cleanenv): the local runs pass the same
APPTAINER_ARGS = yaml.safe_load((Path(ROOT) / "slurm/config.yaml").read_text())["apptainer-args"]


def snakemake(workdir, *args, configfile=TEST_CONFIG, repo=ROOT, apptainer=True, timeout=1500, env=None):
    """Snakemake on `configfile` as a user runs it. With `apptainer` (the default, as the Slurm profile
    does) every job goes through the stand-in with its pinned image; dry runs must say the same, or
    they see other software and plan everything again."""
    sdm = ["--sdm", "apptainer", f"--apptainer-args={APPTAINER_ARGS}"] if apptainer else []
    cmd = ["snakemake", "-s", f"{repo}/workflow/Snakefile", "--configfile", str(configfile), "--cores", "2", *sdm, *args]
    full_env = {**standin_env(Path(workdir) / "apptainer.jsonl"), **(env or {})}
    return run_group(cmd, timeout, cwd=workdir, env=full_env)


def run_group(cmd, timeout, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True), in a session of its own: at the timeout its jobs
    are killed with it (subprocess.run kills only Snakemake, and an orphaned training job went on for minutes,
    slowing every test after it)."""
    import signal

    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          **kwargs) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def planned(workdir, configfile=TEST_CONFIG, repo=ROOT, apptainer=True, env=None) -> dict[str, int]:
    """Jobs a dry run would run, per rule (from Snakemake's job stats table)."""
    r = snakemake(workdir, "-n", configfile=configfile, repo=repo, apptainer=apptainer, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return job_stats(r.stdout + r.stderr)


def edited_config(tmp_path, edit, base=TEST_CONFIG) -> Path:
    """A copy of the test config with `edit(config)` applied."""
    import yaml

    cfg = yaml.safe_load(Path(base).read_text())
    edit(cfg)
    path = Path(tmp_path) / f"edited-{len(list(Path(tmp_path).glob('edited-*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


DAG_CALLS = "apptainer.dag.jsonl"


@pytest.fixture(scope="session")
def dag_run(tmp_path_factory):
    """The whole DAG of the test config, once per session, every job in its image (the stand-in):
    the workflow, Apptainer and archive tests all read this one run."""
    work = tmp_path_factory.mktemp("dag")
    r = snakemake(work)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    # the stand-in's calls of this run alone: tests that rerun a job here append to apptainer.jsonl
    shutil.copy(work / "apptainer.jsonl", work / DAG_CALLS)
    return work, r.stdout + r.stderr
