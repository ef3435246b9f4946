"""Published digests: a run's scientific outputs against a published run's, by file, in pipeline order
(`lorarank check-run`, and `lorarank verify-archive --rerun` against an authors' archive)."""

import json
import shutil

import pytest

ENV = {"python": "3.11.7", "container": None, "hardware": {"cpus": 2}, "numerics": {"kernels": "portable"},
       "packages": {"torch": "2.13.0", "numpy": "2.4.6", "snakemake": "9.27.1"}}
CONFIG = {"experiment": "exp", "seeds": [0, 1], "numerics": {"kernels": "portable", "threads": 2}}
SCIENTIFIC = ["data/train.parquet", "model/base/model.safetensors", "runs/grpo/uniform/ratio/seed0/final/adapter_model.safetensors",
              "runs/grpo/uniform/ratio/seed0/grad_norms.parquet", "eval/base/seed0/predictions.parquet",
              "summary/results.md"]


def finished_run(root, config=CONFIG, name="exp"):
    """A results/<experiment> tree as the workflow leaves it: scientific outputs, records, and its archive."""
    from lorarank.provenance.archive import archive

    r = root / name
    for i, rel in enumerate(SCIENTIFIC + ["runs/grpo/uniform/ratio/seed0/run.json", "summary/results.csv",
                                          "eval/base/seed0/metrics.json"]):
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"environment": ENV, "seconds": 1.5}) if rel.endswith(".json") else f"{rel} {i}"
        (r / rel).write_text(body)
    archive(r, [str(r / d) for d in ("data", "model", "runs", "eval", "summary")], config, r / "archive")
    return r


@pytest.fixture
def published(tmp_path, cli):
    """A finished run and its published digests."""
    run = finished_run(tmp_path / "authors")
    code, out, err = cli("check-run", run, "--publish", "--against", tmp_path / "published.json")
    assert code == 0, err
    return run, tmp_path / "published.json"


def test_publish_writes_exactly_the_scientific_outputs_in_pipeline_order(published):
    _, path = published
    doc = json.loads(path.read_text())
    assert list(doc["files"]) == SCIENTIFIC  # no run.json, metrics.json, results.csv: they hold times and paths
    assert doc["config"] == CONFIG and doc["packages"] == {"torch": "2.13.0", "numpy": "2.4.6"}


def test_an_identical_rerun_says_so(published, tmp_path, cli):
    _, path = published
    rerun = finished_run(tmp_path / "rerun")
    code, out, err = cli("check-run", rerun, "--against", path)
    assert code == 0 and out.strip() == f"{rerun}: 6/6 outputs identical to the published run", err


def test_the_first_output_that_differs_is_named_in_pipeline_order(published, tmp_path, cli):
    _, path = published
    rerun = finished_run(tmp_path / "rerun")
    (rerun / "summary/results.md").write_text("another verdict")
    (rerun / "runs/grpo/uniform/ratio/seed0/grad_norms.parquet").write_text("another gradient")
    code, out, err = cli("check-run", rerun, "--against", path)
    lines = err.strip().splitlines()
    assert code == 1 and out == ""
    assert lines[0] == f"{rerun}: 4/6 outputs identical to the published run; 2 differ, 0 missing, 0 not in the published run"
    assert lines[1].startswith(f"{rerun}: first that differs: runs/grpo/uniform/ratio/seed0/grad_norms.parquet (sha256 ")
    assert "training diverged although its inputs match" in lines[1]


def test_missing_outputs_and_moved_packages_are_reported(published, tmp_path, cli):
    _, path = published
    doc = json.loads(path.read_text())
    doc["packages"]["torch"] = "2.14.1"
    path.write_text(json.dumps(doc))
    rerun = finished_run(tmp_path / "rerun")
    (rerun / "eval/base/seed0/predictions.parquet").unlink()
    code, _, err = cli("check-run", rerun, "--against", path)
    assert code == 1
    assert f"{rerun}: missing: eval/base/seed0/predictions.parquet" in err.splitlines()
    assert err.strip().endswith("package versions differ from the published run's: torch 2.13.0 (published: 2.14.1)")


def test_another_config_is_not_comparable(published, tmp_path, cli):
    _, path = published
    native = {**CONFIG, "numerics": {"kernels": "native", "threads": 2}}
    rerun = finished_run(tmp_path / "rerun", config=native)
    code, out, err = cli("check-run", rerun, "--against", path)
    assert code == 0 and err == ""
    assert out.strip() == (f'{rerun}: not comparable: the run\'s config differs from the published run\'s at '
                           f'numerics.kernels: "native" (published: "portable"); published digests hold for the '
                           f'published config only')


def test_a_committee_checks_its_rerun_against_the_authors_archive(published, tmp_path, cli):
    authors, _ = published
    rerun = finished_run(tmp_path / "rerun")
    for target in (authors / "archive", authors / "archive/exp.tar.gz"):
        code, out, err = cli("verify-archive", target, "--rerun", rerun)
        assert code == 0 and out.strip().splitlines()[-1] == f"{rerun}: 6/6 outputs identical to the published run", err
        code, out, _ = cli("check-run", rerun, "--against", target)  # the same through check-run
        assert code == 0 and "6/6 outputs identical" in out
    (rerun / "data/train.parquet").write_text("other data")
    code, _, err = cli("verify-archive", authors / "archive", "--rerun", rerun)
    assert code == 1 and "first that differs: data/train.parquet" in err and "the data splits differ" in err


def test_a_tampered_archive_is_no_reference(published, tmp_path, cli):
    authors, _ = published
    rerun = finished_run(tmp_path / "rerun")
    tree = tmp_path / "extracted"
    shutil.copytree(authors, tree)
    (tree / "archive").rename(tmp_path / "moved")  # an extracted copy: MANIFEST.json beside the files
    shutil.copy(tmp_path / "moved/MANIFEST.json", tree / "MANIFEST.json")
    (tree / "summary/results.md").write_text("tampered")
    code, _, err = cli("check-run", rerun, "--against", tree / "MANIFEST.json")
    assert code == 2 and err.strip().splitlines() == [
        f"lorarank check-run: error: {tree} does not verify against its own manifest (summary/results.md: changed "
        + err.split("summary/results.md: changed ", 1)[1].strip()]


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, cli):
    code, _, err = cli("check-run", tmp_path / "nope", "--against", tmp_path / "p.json")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no published digests" in err
    run = finished_run(tmp_path / "r")
    (run / "summary/results.md").write_text("edited after the archive")
    code, _, err = cli("check-run", run, "--publish", "--against", tmp_path / "p.json")
    assert code == 2 and "summary/results.md does not match the run's archive manifest" in err
    assert not (tmp_path / "p.json").exists()


def test_outputs_an_earlier_config_left_behind_do_not_count(published, tmp_path, cli):
    """Only the files the run's own manifest lists are compared: a dropped arm's old outputs stay on disk."""
    _, path = published
    rerun = finished_run(tmp_path / "rerun")
    stale = rerun / "eval/grpo/random/ratio/seed0/predictions.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_text("from a config that had a random arm")
    code, out, _ = cli("check-run", rerun, "--against", path)
    assert code == 0 and "6/6 outputs identical" in out


def test_publish_never_overwrites_an_archive(published, cli):
    run, _ = published
    tarball = run / "archive/exp.tar.gz"
    before = tarball.read_bytes()
    code, _, err = cli("check-run", run, "--publish", "--against", tarball)
    assert code == 2 and err.strip().splitlines() == [
        f"lorarank check-run: error: --publish writes a .json file, not {str(tarball)!r} (an archive is never overwritten)"]
    assert tarball.read_bytes() == before


PIPELINE = [  # README: the first differing output "in pipeline order", each stage's file and what it points to
    ("data/validation.parquet", "the data splits differ"),
    ("model/base/model.safetensors", "the base model differs"),
    ("warmup/final/model.safetensors", "the warm-up trained differently"),
    ("runs/sft/uniform/ratio/lr0.001/seed0/ranks.parquet", "training diverged"),
    ("eval/test/sft/uniform/ratio/seed0/predictions.parquet", "the predictions differ"),
    ("summary/results.md", "the report differs"),
]


def test_check_run_names_the_earliest_stage_of_the_pipeline_whatever_the_files_order(tmp_path, cli):
    """For every two stages that both differ, the earlier stage is named (alphabetical order would put eval before
    model, runs and warmup), even when the published file lists its digests in another order."""
    from itertools import combinations

    from lorarank.provenance.archive import archive

    run = tmp_path / "exp"
    for rel, _ in PIPELINE:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(rel)
    archive(run, [str(run / rel.split("/")[0]) for rel, _ in PIPELINE], CONFIG, run / "archive")
    path = tmp_path / "published.json"
    assert cli("check-run", run, "--publish", "--against", path)[0] == 0
    doc = json.loads(path.read_text())
    assert list(doc["files"]) == [rel for rel, _ in PIPELINE]
    for (first, why), (later, _) in combinations(PIPELINE, 2):
        files = {rel: "0" * 64 if rel in (first, later) else sha for rel, sha in reversed(doc["files"].items())}
        path.write_text(json.dumps({**doc, "files": files}))
        code, _, err = cli("check-run", run, "--against", path)
        lines = err.strip().splitlines()
        assert code == 1 and lines[0].endswith("4/6 outputs identical to the published run; 2 differ, 0 missing, "
                                               "0 not in the published run"), lines
        assert lines[1].startswith(f"{run}: first that differs: {first} (sha256 ") and why in lines[1], (first, later)


@pytest.mark.parametrize("name,outputs", [("default", 47), ("lr", 165)])
def test_the_shipped_digests_are_what_check_run_reads_by_the_experiments_name(name, outputs, tmp_path, cli):
    """README: `check-run results/<experiment>` reads config/published/<experiment>.json, which holds the default
    run's 47 scientific outputs (the learning-rate study's 165), of its own config, in pipeline order. Here a run
    of another config under that name is reported not comparable to exactly that file's config."""
    from lorarank.provenance.published import PUBLISHED, order, scientific

    shipped = json.loads((PUBLISHED / f"{name}.json").read_text())
    assert shipped["format"] == "lorarank-digests/1" and shipped["experiment"] == shipped["config"]["experiment"] == name
    files = list(shipped["files"])
    assert len(files) == outputs and all(scientific(f) for f in files) and files == sorted(files, key=order)
    code, out, err = cli("check-run", finished_run(tmp_path, name=name))  # no --against
    first = next(k for k in shipped["config"] if CONFIG.get(k) != shipped["config"][k])
    assert code == 0 and "not comparable" in out, err
    assert f"published: {json.dumps(shipped['config'][first], sort_keys=True)}" in out
    code, _, err = cli("check-run", finished_run(tmp_path, name="no-such-study"))
    assert code == 2 and f"no published digests at {str(PUBLISHED / 'no-such-study.json')!r}" in err
