"""Container definitions, hash-pinned locks and pinned image references."""

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from spython.main.parse.parsers import SingularityParser

from lorarank.provenance.containers import (
    COMMAND_ENV,
    ENVIRONMENTS,
    binds,
    check_reference,
    digest,
    env_paths,
    passed_env,
    references,
)

DEFS = sorted(Path(ROOT, "containers").glob("*.def"))
REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
HEX = "ab" * 32


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from a pip requirements lock (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        m = REQ.match(line)
        assert m, f"{path.name}: not pinned with ==: {line[:80]}"
        out[m[1].lower()] = (m[2], re.findall(r"--hash=sha256:([0-9a-f]{64})\b", line))
    return out


def pins(path: Path) -> dict[str, str]:
    return {m[1].lower(): m[2] for line in path.read_text().splitlines() if (m := REQ.match(line.strip()))}


def test_there_is_one_def_per_environment():
    assert sorted(d.stem for d in DEFS) == sorted(ENVIRONMENTS)
    assert set(COMMAND_ENV.values()) == set(ENVIRONMENTS)
    from lorarank.cli import COMMANDS

    assert set(COMMAND_ENV) == set(COMMANDS)  # every command has an image


@pytest.mark.parametrize("deffile", DEFS, ids=lambda p: p.name)
def test_def_parses_and_installs_only_from_its_hashed_lock(deffile):
    recipe = SingularityParser(str(deffile)).recipe
    assert len(recipe) == 1, "one stage"
    stage = next(iter(recipe.values()))
    # the base image by digest, from Docker Hub
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", stage.fromHeader), stage.fromHeader
    env = deffile.stem
    src, dest = stage.files[0].split()
    assert src == f"envs/{env}.lock" and Path(ROOT, src).is_file()
    install = " ".join(stage.install).replace("\\ ", " ")
    pips = list(re.finditer(r"pip install(.*?) -r (\S+)", install))
    assert pips and len(pips) == install.count("pip install"), install  # every install reads a lock
    for m in pips:
        assert "--require-hashes" in m[1] and "--no-deps" in m[1] and m[2] == dest, m[0]
    assert "pip check" in install
    assert any(label.split()[:2] == ["org.lorarank.env", env] for label in stage.labels)


@pytest.mark.parametrize("deffile", DEFS, ids=lambda p: p.name)
def test_no_cache_directory_is_a_path_another_user_could_plant(deffile, tmp_path):
    # the image's %environment, run as Apptainer runs it (sh, sourced at each exec): every *_DIR it exports
    # lies in a directory made for this process, unguessable and private, never a fixed shared path
    section = deffile.read_text().split("%environment", 1)[1].split("\n%", 1)[0]
    dirs = set()
    for _ in range(2):
        out = subprocess.run(["sh", "-c", section + "\nenv"], capture_output=True, text=True, check=True,
                             env={"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)}).stdout
        exported = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        caches = {k: v for k, v in exported.items() if k.endswith("_DIR") and k != "TMPDIR"}
        for path in caches.values():
            parent = Path(path).parent
            assert parent.parent == tmp_path and stat.S_IMODE(parent.stat().st_mode) == 0o700, (path, caches)
            dirs.add(parent)
    assert len(dirs) == (2 if "TORCH_EXTENSIONS_DIR" in deffile.read_text() else 0)  # one per exec


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_locked_package_is_pinned_with_hashes(env):
    lock = lock_entries(Path(ROOT, f"envs/{env}.lock"))
    assert len(lock) > 10
    for name, (version, hashes) in lock.items():
        assert hashes, f"{name}=={version} has no hash"
    # the top-level requirements are in the lock at the versions asked for
    for name, version in pins(Path(ROOT, f"envs/{env}.in")).items():
        assert lock[name][0] == version, (name, lock[name][0], version)


def test_locks_agree_with_what_ci_installs():
    """The images and the CPU machines run the same versions of everything both install."""
    ci = pins(Path(ROOT, "envs/constraints.txt"))
    for env in ENVIRONMENTS:
        for name, version in pins(Path(ROOT, f"envs/{env}.in")).items():
            if name in ci:
                assert ci[name] == version, (env, name, version, ci[name])
    assert lock_entries(Path(ROOT, "envs/train.lock"))["torch"][0] == "2.13.0"
    assert "torch" not in lock_entries(Path(ROOT, "envs/analysis.lock"))


@pytest.mark.parametrize("ref", [
    f"oras://ghcr.io/lab/lorarank-train@sha256:{HEX}",
    f"docker://docker.io/library/python:3.11-slim@sha256:{HEX}",
    f"library://lab/default/lorarank:sha256.{HEX}",
    f"containers/sif/lorarank-train.sha256-{HEX}.sif",
])
def test_pinned_references_are_accepted(ref):
    assert check_reference("train", ref) == ref
    assert digest(ref) == HEX


@pytest.mark.parametrize("ref", [
    "docker://python:3.11", "oras://ghcr.io/lab/lorarank-train:latest", "containers/sif/train.sif",
    f"oras://ghcr.io/lab/x@sha256:{HEX[:-1]}", f"oras://ghcr.io/lab/x@sha256:{HEX.upper()}",
    f"https://example.org/x@sha256:{HEX}", f"docker://x@sha256:{HEX} --nv", "", 42,
])
def test_mutable_or_malformed_references_are_refused_naming_the_value(ref):
    with pytest.raises(ValueError) as e:
        check_reference("analysis", ref)
    msg = str(e.value)
    assert msg.startswith(f"containers.analysis: {ref!r} is not pinned by digest") and "\n" not in msg


@pytest.mark.parametrize("ref", [
    # a tag, or no tag at all, in every scheme: a moved tag would neither rerun nor re-pull
    "docker://python:latest", "docker://docker.io/library/python:3.11-slim-bookworm", "docker://python",
    "docker://ghcr.io/lab/lorarank-train:latest", "oras://ghcr.io/lab/lorarank-train",
    "library://lab/default/lorarank:latest", "library://lab/default/lorarank",
    # digest look-alikes: a tag named like a digest, another algorithm, the wrong separator per scheme
    f"docker://ghcr.io/lab/x:sha256-{HEX}", f"docker://ghcr.io/lab/x@sha512:{HEX}{HEX}",
    f"docker://ghcr.io/lab/x@sha256.{HEX}", f"library://lab/default/x@sha256:{HEX}",
    f"library://lab/default/x:sha256:{HEX}", f"docker://ghcr.io/lab/x:sha256.{HEX}",
    # a local image not named by its digest, or a digest-named file behind a scheme
    "containers/sif/lorarank-train.sif", "/abs/lorarank-train.sif", f"containers/x.sha256-{HEX}.img",
    f"docker://containers/x.sha256-{HEX}.sif",
    # a pinned reference with anything after it: a newline (a YAML block scalar) or more words
    f"docker://ghcr.io/lab/x@sha256:{HEX}\n", f"library://lab/default/x:sha256.{HEX}\n",
    f"containers/x.sha256-{HEX}.sif\n", f"docker://ghcr.io/lab/x@sha256:{HEX}:latest", None,
])
def test_every_reference_not_pinned_by_a_digest_is_refused_in_one_line(ref):
    """README: "Only digests are accepted (docker:// / oras://...@sha256:..., library://...:sha256...., or a local
    .sha256-<hex>.sif): a tag such as :latest is refused in one line"."""
    with pytest.raises(ValueError) as e:
        check_reference("train", ref)
    msg = str(e.value)
    assert msg.startswith(f"containers.train: {ref!r} is not pinned by digest (allowed: ") and "\n" not in msg


def test_unset_images_are_refused_only_when_apptainer_is_asked_for():
    assert references({"train": None}, required=False) == {"train": None, "analysis": None}
    with pytest.raises(ValueError, match=r"containers.train is not set, and --sdm apptainer"):
        references({"train": None, "analysis": f"oras://r/a@sha256:{HEX}"}, required=True)
    with pytest.raises(ValueError, match=r"containers.gpu: unknown environment"):
        references({"gpu": f"oras://r/a@sha256:{HEX}"}, required=False)


@pytest.mark.parametrize("cfg", ["config/config.yaml", "config/paper.yaml", "tests/workflow/config.test.yaml"])
def test_shipped_configs_name_no_image_without_a_digest(cfg):
    containers = yaml.safe_load(Path(ROOT, cfg).read_text())["containers"]
    assert set(containers) == set(ENVIRONMENTS)
    for env, ref in containers.items():
        assert ref is None or check_reference(env, ref)


def test_every_rule_names_its_container():
    """Each rule (but `all`) has `container: image("<its command>")`, the command it runs."""
    for smk in Path(ROOT, "workflow/rules").glob("*.smk"):
        for block in re.split(r"(?m)^(?=rule )", smk.read_text())[1:]:
            name = block.split(":", 1)[0].split()[1]
            command = re.search(r'code=CODE\["([\w-]+)"\]', block)[1]
            assert re.search(rf'container:\n\s+image\("{command}"\)', block), name
            assert re.search(rf"python -m lorarank {command}\b|-m\"?\s*\"? lorarank {command}\b|"
                             rf"\{{params.launcher\}} lorarank {command}\b", block), name


def test_inputs_outside_what_the_container_mounts_are_bound_where_the_config_names_them(tmp_path, monkeypatch):
    checkout, work, outside = tmp_path / "repo", tmp_path / "work", tmp_path / "data"
    for d in (checkout, work, outside, work / "local"):
        d.mkdir()
    (tmp_path / "link").symlink_to(outside)
    (work / "inlink").symlink_to(outside)  # inside the working directory as named, outside where it is
    paths = {"data.path": str(outside), "model.name_or_path": str(work / "local"), "grpo.deepspeed": str(checkout),
             "model.gguf.path": str(tmp_path / "link"), "sft.deepspeed": str(work / "inlink")}
    # the link outside: its target mounted at the link's path; the link inside the working directory (mounted
    # already): its target where it is, so that the link resolves inside (a mount onto it would lie under the
    # working directory's)
    assert binds(paths, [str(checkout), str(work)]) == [str(outside), f"{outside}:{tmp_path / 'link'}"]
    monkeypatch.chdir(work)  # a relative path is bound at its absolute place
    assert binds({"data.path": "../data"}, [str(checkout), "."]) == [str(outside)]


@pytest.mark.parametrize("name", ["a,b", "a:b"])
def test_a_path_a_bind_list_cannot_carry_is_refused_naming_the_key(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(ValueError, match=rf"^data.path: '.*{name}' holds ',' or ':', which an Apptainer bind"):
        binds({"data.path": str(tmp_path / name)}, [str(tmp_path / "elsewhere")])


def test_only_the_named_variables_pass_into_the_container(tmp_path):
    host = {"CUDA_VISIBLE_DEVICES": "2,3", "HF_TOKEN": "hf_x", "PYTHONPATH": "/home/me/lib", "LD_LIBRARY_PATH": "/opt",
            "OMP_NUM_THREADS": "64", "https_proxy": "http://proxy:3128", "NCCL_SOCKET_IFNAME": "ib0",
            "WANDB_API_KEY": "k", "TMPDIR": str(tmp_path), "HF_HOME": str(tmp_path / "absent"), "MYNCCL_X": "1"}
    assert passed_env(host) == {"APPTAINERENV_CUDA_VISIBLE_DEVICES": "2,3", "APPTAINERENV_HF_TOKEN": "hf_x",
                                "APPTAINERENV_https_proxy": "http://proxy:3128", "APPTAINERENV_NCCL_SOCKET_IFNAME": "ib0",
                                "APPTAINERENV_WANDB_API_KEY": "k", "APPTAINERENV_TMPDIR": str(tmp_path)}
    # a path-naming variable passes where its path exists, and is then bound (HF_HOME here does not exist yet)
    assert env_paths(host) == {"TMPDIR": str(tmp_path)}


def test_the_slurm_profile_cleans_the_environment():
    profile = yaml.safe_load(Path(ROOT, "slurm/config.yaml").read_text())
    assert profile["apptainer-args"].split() == ["--nv", "--cleanenv"]
