"""Archive: deterministic bytes, a manifest that records what produced what, and verification that
names every file that changed."""

import gzip
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from lorarank.provenance.archive import tracked_code, write_tarball

HEX = "cd" * 32
ENV_A = {"python": "3.11.7", "container": None, "hardware": {"cpus": 2}, "packages": {"torch": "2.13.0"}}


@pytest.fixture
def results(tmp_path):
    """A small results/<experiment> tree: binary, JSON, nested directories, runs recording environments."""
    r = tmp_path / "results" / "exp"
    (r / "runs/uniform/seed0/final").mkdir(parents=True)
    (r / "runs/uniform/seed0/final/adapter_model.safetensors").write_bytes(bytes(range(256)) * 40)
    (r / "runs/uniform/seed0/final/.snakemake_timestamp").write_text("")
    (r / "runs/uniform/seed0/run.json").write_text(json.dumps({"seed": 0, "environment": ENV_A}))
    (r / "eval/uniform/seed0").mkdir(parents=True)
    (r / "eval/uniform/seed0/metrics.json").write_text(json.dumps({"n": 16, "environment": ENV_A}))
    (r / "summary").mkdir()
    (r / "summary/results.csv").write_text("strategy,acc\nuniform,0.5\n")
    (r / "summary/empty.txt").write_text("")
    return r


def make(cli, results, out, *extra):
    config = {"experiment": "exp", "containers": {"train": f"oras://r.example/t@sha256:{HEX}", "analysis": None}}
    code, stdout, err = cli("archive", "--results", results, "--inputs", results / "runs", results / "eval",
                            results / "summary", "--config-json", json.dumps(config), "--snakemake-version", "9.27.1",
                            "--out", out, *extra)
    assert code == 0, err
    return out


def verify(cli, path):
    code, out, err = cli("verify-archive", path)
    return code, err.strip().splitlines()


def test_archive_verifies_and_records_what_produced_it(cli, results, tmp_path):
    out = make(cli, results, tmp_path / "archive")
    doc = json.loads((out / "MANIFEST.json").read_text())
    assert sorted(doc["files"]) == ["eval/uniform/seed0/metrics.json", "runs/uniform/seed0/final/adapter_model.safetensors",
                                    "runs/uniform/seed0/run.json", "summary/empty.txt", "summary/results.csv"]
    assert doc["files"]["summary/empty.txt"]["bytes"] == 0
    assert doc["containers"]["train"]["sha256"] == HEX and doc["containers"]["analysis"] is None
    assert doc["config"]["experiment"] == "exp" and doc["snakemake"] == "9.27.1"
    # both jobs saw the same software: one train environment, recorded by both
    assert [e["recorded_by"] for e in doc["environments"]["train"]] == [
        ["eval/uniform/seed0/metrics.json", "runs/uniform/seed0/run.json"]]
    assert doc["environments"]["analysis"][0]["environment"]["packages"]["pandas"]
    assert doc["hardware"] == [{"cpus": 2}]
    with tarfile.open(out / "exp.tar.gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(f"exp/{f}" for f in doc["files"]) + ["exp/MANIFEST.json"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    for path in (out, out / "exp.tar.gz"):
        code, err = verify(cli, path)
        assert code == 0, err


def test_two_archives_of_the_same_results_are_byte_identical(cli, results, tmp_path):
    a = make(cli, results, tmp_path / "a")
    for f in results.rglob("*"):  # new timestamps and permissions do not change the results
        os.utime(f, (1_900_000_000, 1_900_000_000))
    (results / "summary/results.csv").chmod(0o600)
    b = make(cli, results, tmp_path / "b")
    assert (a / "exp.tar.gz").read_bytes() == (b / "exp.tar.gz").read_bytes()
    assert (a / "MANIFEST.json").read_bytes() == (b / "MANIFEST.json").read_bytes()
    (results / "summary/results.csv").write_text("strategy,acc\nuniform,0.6\n")
    c = make(cli, results, tmp_path / "c")
    assert (a / "exp.tar.gz").read_bytes() != (c / "exp.tar.gz").read_bytes()


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:] if data else b"\x00"


def test_one_changed_byte_in_any_archived_file_is_named(cli, results, tmp_path):
    """Each file in turn: a tarball rebuilt with one byte of it changed (the manifest kept) fails."""
    out = make(cli, results, tmp_path / "archive")
    doc = json.loads((out / "MANIFEST.json").read_text())
    manifest = (out / "MANIFEST.json").read_bytes()
    for rel in doc["files"]:
        work = tmp_path / "tampered" / rel.replace("/", "_")
        shutil.copytree(results, work / "exp")
        f = work / "exp" / rel
        f.write_bytes(flip(f.read_bytes(), f.stat().st_size // 2))
        files = {r: work / "exp" / r for r in doc["files"]}
        write_tarball(work / "exp.tar.gz", "exp", files, manifest)
        shutil.copy(out / "MANIFEST.json", work / "MANIFEST.json")
        code, lines = verify(cli, work)
        assert code == 1 and len(lines) == 1 and lines[0].startswith(f"lorarank verify-archive: {rel}: changed"), lines


def test_an_extracted_copy_verifies_itself_and_names_changes(cli, results, tmp_path):
    out = make(cli, results, tmp_path / "archive")
    with tarfile.open(out / "exp.tar.gz") as tar:
        # the "data" filter where this Python has it (3.11.4+; Debian 12's 3.11.2 has not)
        tar.extractall(tmp_path / "x", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    tree = tmp_path / "x" / "exp"
    assert verify(cli, tree)[0] == 0
    f = tree / "runs/uniform/seed0/final/adapter_model.safetensors"
    f.write_bytes(flip(f.read_bytes(), 0))
    (tree / "summary/results.csv").unlink()
    (tree / "summary/extra.txt").write_text("x")
    code, lines = verify(cli, tree)
    assert code == 1
    assert any("adapter_model.safetensors: changed" in line for line in lines)
    assert any("summary/results.csv: missing" in line for line in lines)
    assert any("summary/extra.txt: not in the manifest" in line for line in lines)


def test_a_tampered_manifest_or_tarball_is_named(cli, results, tmp_path):
    out = make(cli, results, tmp_path / "archive")
    m = out / "MANIFEST.json"
    m.write_bytes(m.read_bytes().replace(b'"9.27.1"', b'"9.27.2"'))
    code, lines = verify(cli, out)
    assert code == 1 and lines == ["lorarank verify-archive: MANIFEST.json: differs from the copy inside exp.tar.gz"]
    out = make(cli, results, tmp_path / "archive2")
    t = out / "exp.tar.gz"
    t.write_bytes(flip(t.read_bytes(), t.stat().st_size // 2))
    code, lines = verify(cli, out)
    assert code == 1 and len(lines) == 1 and "exp.tar.gz: corrupt" in lines[0], lines


def test_the_tarball_is_plain_gzip_without_a_timestamp(cli, results, tmp_path):
    data = (make(cli, results, tmp_path / "a") / "exp.tar.gz").read_bytes()
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"  # gzip MTIME field is zero
    assert gzip.decompress(data)[:3] == b"exp"


def test_code_version_names_commit_dirty_flag_and_tracked_content(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "a.py"], check=True)
    subprocess.run(git + ["commit", "-qm", "a"], check=True)
    clean = tracked_code(repo)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert clean["git_commit"] == head and clean["dirty"] is False and clean["tracked_files"] == 1
    (repo / "untracked.txt").write_text("not code")
    assert tracked_code(repo) == clean  # untracked files are not the code
    (repo / "a.py").write_text("x = 2\n")
    dirty = tracked_code(repo)
    assert dirty["dirty"] is True and dirty["tracked_files_sha256"] != clean["tracked_files_sha256"]
    assert tracked_code(tmp_path / "results")["git_commit"] is None
    # a folder inside a repository is not a checkout: git must not climb to the (possibly planted) parent
    (repo / "inner").mkdir()
    inner = tracked_code(repo / "inner")
    assert inner["git_commit"] is None and "not a git repository" in inner["reason"]


def _repo(path, text="x = 1\n"):
    """A git repository at `path` with one commit of a.py; its commit."""
    path.mkdir(parents=True)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    (path / "a.py").write_text(text)
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "a.py"], check=True)
    subprocess.run(git + ["commit", "-qm", "a"], check=True)
    return subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def test_the_code_version_ignores_git_variables_in_the_environment(tmp_path, monkeypatch):
    """README: the archive job asks git about its own checkout only. GIT_DIR and the like in the job's environment
    (inherited from a shell or a batch system) would point git at another repository, and GIT_CONFIG_* would hand it
    configuration that runs commands (core.fsmonitor runs on every `git status`)."""
    repo, other = tmp_path / "repo", tmp_path / "other"
    head = _repo(repo)
    _repo(other, "y = 2\n")
    (other / "b.py").write_text("")
    subprocess.run(["git", "-C", str(other), "add", "b.py"], check=True)
    want = tracked_code(repo)
    assert want["git_commit"] == head and want["tracked_files"] == 1 and want["dirty"] is False
    planted = tmp_path / "PWNED"
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.fsmonitor")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", f"touch {planted}; false")
    assert tracked_code(repo) == want
    assert not planted.exists()


def test_a_checkout_owned_by_another_user_is_trusted_and_only_it(tmp_path, monkeypatch):
    """A container runs as another user than the checkout's owner: git refuses such a repository ("dubious
    ownership") unless it is named in safe.directory. The archive names its own checkout there, and only it."""
    if os.geteuid() != 0:
        pytest.skip("giving the checkout to another user needs root")
    repo = tmp_path / "repo"
    head = _repo(repo)
    want = tracked_code(repo)
    for top, dirs, files in os.walk(repo):
        for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
            os.lchown(name, 12345, 12345)
    monkeypatch.delenv("SUDO_UID", raising=False)  # git trusts a sudo caller's own repositories
    plain = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert plain.returncode != 0 and "dubious ownership" in plain.stderr  # what git does without it
    assert tracked_code(repo) == want and want["git_commit"] == head
    calls = []
    real = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or real(cmd, **kw))
    tracked_code(repo)
    assert calls and all(cmd[:3] == ["git", "-c", f"safe.directory={repo.resolve()}"] for cmd in calls), calls


def test_different_environments_are_each_recorded(cli, results, tmp_path):
    run = results / "runs/uniform/seed0/run.json"
    run.write_text(json.dumps({"environment": {**ENV_A, "packages": {"torch": "2.14.0"}}}))
    doc = json.loads((make(cli, results, tmp_path / "a") / "MANIFEST.json").read_text())
    assert sorted(e["environment"]["packages"]["torch"] for e in doc["environments"]["train"]) == ["2.13.0", "2.14.0"]


BAD = {
    "input outside the results": (lambda r, t: ["--inputs", str(t)], "is not under the results directory"),
    "input missing": (lambda r, t: ["--inputs", str(r / "nope.json")], "nope.json' does not exist"),
    "a link among the results": (lambda r, t: (r / "summary/link.csv").symlink_to(r / "summary/results.csv")
                                 or ["--inputs", str(r / "summary")], "summary/link.csv' is a link (allowed: regular"),
    "config not JSON": (lambda r, t: ["--inputs", str(r / "summary"), "--config-json", "{x"], "--config-json is not valid JSON"),
    "mutable container tag": (lambda r, t: ["--inputs", str(r / "summary"), "--config-json",
                                            '{"containers": {"train": "docker://python:3.11"}}'], "is not pinned by digest"),
    "local image whose name is not its content": (
        lambda r, t: ["--inputs", str(r / "summary"), "--config-json",
                      json.dumps({"containers": {"train": str(t / f"img.sha256-{HEX}.sif")}})],
        "does not match its name"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_archive_input_is_one_line_and_writes_nothing(cli, results, tmp_path, case):
    (tmp_path / f"img.sha256-{HEX}.sif").write_bytes(b"not that image")
    build, expected = BAD[case]
    out = tmp_path / "archive"
    code, _, err = cli("archive", "--results", results, "--out", out, *build(results, tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not out.exists()


def test_verify_of_something_that_is_not_an_archive_is_one_line(cli, tmp_path):
    code, lines = verify(cli, tmp_path)
    assert code == 2 and len(lines) == 1 and "is not an archive" in lines[0]
