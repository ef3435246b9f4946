"""No path a config names can become a second command: every planned job's shell command, with a local model and
data directory whose names hold spaces, quotes, ';', `$()` and backticks, parses to the intended arguments."""

import json
import shlex
import subprocess

import pytest
from conftest import edited_config, snakemake

pytestmark = pytest.mark.dag

NASTY = "m dir;touch PWNED $(touch PWNED) 'q\" `touch PWNED`"


def test_every_planned_command_keeps_a_hostile_path_one_argument(tmp_path):
    model, data = tmp_path / NASTY / "model", tmp_path / NASTY / "gsm8k"
    model.mkdir(parents=True)
    data.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2", "num_hidden_layers": 2}))
    for split, n in (("train", 400), ("test", 64)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"question": f"{split} {i}?", "answer": f"#### {i}"})
                                                     + "\n" for i in range(n)))

    def edit(c):
        c["model"].update(source="pretrained", name_or_path=str(model))
        c["data"].update(source="local", path=str(data))

    r = snakemake(tmp_path, "-n", "-p", configfile=edited_config(tmp_path, edit), apptainer=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    commands = [line.removeprefix("Shell command: ") for line in (r.stdout + r.stderr).splitlines()
                if line.startswith("Shell command: ") and line != "Shell command: None"]  # None: rule all
    reads = {"prepare-data": ("--path", str(data)), "allocate": ("--model", str(model)),
             "lora-config": ("--model", str(model)), "train": ("--model", str(model)),
             "sft": ("--model", str(model)), "evaluate": ("--model", str(model))}
    seen = set()
    for c in commands:
        assert subprocess.run(["bash", "-n", "-c", c]).returncode == 0, c
        words = shlex.split(c)
        if "--config-json" in words:  # the archive's resolved config: one argument, the paths intact inside
            config = json.loads(words.pop(words.index("--config-json") + 1))
            assert (config["model"]["name_or_path"], config["data"]["path"]) == (str(model), str(data))
        # the hostile name appears only as the whole argument it was given, never split into words
        assert all(w in (str(model), str(data)) for w in words if "PWNED" in w), c
        command = words[words.index("lorarank") + 1]
        if command in reads:
            flag, path = reads[command]
            assert words[words.index(flag) + 1] == path, c
            seen.add(command)
    assert seen == set(reads), seen  # each command that reads a config's path was planned and checked

    # and as bash runs them (shlex does not expand `$()` inside double quotes; bash would): each command
    # executed with `python` a stub that records its arguments, in a scratch directory
    stub, run = tmp_path / "stub", tmp_path / "run"
    stub.mkdir()
    run.mkdir()
    (stub / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@" >> "$ARGS_LOG"\n')
    (stub / "python").chmod(0o755)
    for i, c in enumerate(commands):
        words = shlex.split(c)
        log = run / words[words.index(">") + 1]
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {"PATH": f"{stub}:/usr/bin:/bin", "ARGS_LOG": str(tmp_path / f"args{i}")}
        assert subprocess.run(["bash", "-c", c], cwd=run, env=env).returncode == 0, c
        argv = (tmp_path / f"args{i}").read_text().splitlines()
        if "--model" in words:
            assert argv[argv.index("--model") + 1] == words[words.index("--model") + 1], (c, argv)
    assert not list(tmp_path.rglob("PWNED"))  # no substitution ran, in the plan or in bash
