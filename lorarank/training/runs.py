"""What every regime's runs share (`lorarank.training.driver`): checkpoints with the gradient log, resume, outputs.

A run directory holds:
  checkpoints/checkpoint-N/   Trainer state (model/adapter, optimizer, scheduler, RNG) plus
                              grad_norms.partial.parquet and lorarank.json, written last: a
                              checkpoint without it is incomplete (killed mid-save) and is ignored
  grad_norms.parquet          the gradient log (gradlog contract), every step exactly once
  ranks.parquet               LoRA runs: the rank log (ranklog contract): the adapter's ranks at step
                              0, and an AdaLoRA run's at every reallocation (its allocator state is in
                              each checkpoint too, `lorarank.training.adalora`)
  trainer_log.jsonl           one JSON object per logged step (loss, rewards per function, KL, ...)
  progress.jsonl              the same, appended as each step is logged (`lorarank.training.progresslog`): not
                              an output, what `lorarank progress` and `tail -f` read while the run trains;
                              removed when it finishes (results/ holds results alone: the archive has them all)
  tensorboard/                with --report-to tensorboard: TensorBoard's event files (not an output either)
  run.json                    identity (regime, strategy, alpha policy, seed, model), settings, input
                              hashes, environment (packages, hardware), trainable parameters
A rerun of the same command resumes from the newest complete checkpoint whose run key (settings
that change results, and input hashes) matches; checkpoints of another configuration are
discarded, and a finished run removes its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from lorarank import numerics
from lorarank.errors import UserError
from lorarank.io import atomic_dir, atomic_path, sha256_file, weights_sha256, write_json
from lorarank.models.loading import use_bf16
from lorarank.options import identity
from lorarank.provenance.environment import describe
from lorarank.study import run_identity
from lorarank.training import progresslog

MARKER = "lorarank.json"
PARTIAL = "grad_norms.partial.parquet"
TRAINING_ARGS = "training_args.bin"  # the Trainer's pickle of its arguments, in checkpoints and saves


def deepspeed_config(path: str | None) -> dict | None:
    if not path:
        return None
    if not os.path.isfile(path):
        raise UserError(f"DeepSpeed config {path!r} does not exist")
    try:
        cfg = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"DeepSpeed config {path!r} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"DeepSpeed config {path!r} must hold a JSON object")
    zero = cfg.get("zero_optimization") or {}
    if zero.get("stage") == 3 and zero.get("stage3_gather_16bit_weights_on_model_save") is not True:
        # else the Trainer saves the full model as DeepSpeed's pickled shards, not as safetensors (`save_final`)
        raise UserError(f"DeepSpeed config {path!r}: ZeRO-3 needs zero_optimization."
                        f"stage3_gather_16bit_weights_on_model_save: true (allowed: true; see config/deepspeed/zero3.json)")
    return cfg


def ensure_distributed_env() -> None:
    """DeepSpeed needs a process group even for one process: default to a single local rank."""
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


def common_args(out: Path, steps: int, lr: float, seed: int, save_steps: int, max_grad_norm: float,
                bf16: bool, ds: dict | None, report_to: list[str] = (), run_name: str | None = None) -> dict:
    """The TRL config fields every regime sets alike (a regime's recipe may override one, e.g. warmup_steps).
    `report_to`: the trackers that get every logged step (none by default), under `run_name`."""
    return dict(
        output_dir=str(out / "checkpoints"), max_steps=steps, learning_rate=lr, seed=seed, data_seed=seed,
        logging_steps=1, save_strategy="steps", save_steps=save_steps, save_total_limit=2,
        report_to=list(report_to), run_name=run_name, bf16=use_bf16(bf16), fp16=False,
        use_cpu=not torch.cuda.is_available(),
        max_grad_norm=max_grad_norm, dataloader_num_workers=0, disable_tqdm=True,
        deepspeed=ds, lr_scheduler_type="cosine", warmup_steps=0,
    )


class CheckpointGradLog(TrainerCallback):
    """Store the gradient log so far (and an `allocator`'s state: an object with save(dir) and load(dir),
    AdaLoRA's control) inside each checkpoint, then mark the checkpoint complete."""

    def __init__(self, profiler, run_key: str, allocator=None):
        self.profiler = profiler
        self.run_key = run_key
        self.allocator = allocator

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.profiler.truncate(state.global_step)
            with atomic_path(ckpt / PARTIAL) as tmp:
                self.profiler.frame().to_parquet(tmp, index=False)
            if self.allocator is not None:
                self.allocator.save(ckpt)
            write_json(ckpt / MARKER, {"step": state.global_step, "run_key": self.run_key})
        return control


class ProgressLog(TrainerCallback):
    """Append each logged step to the run's live progress log as it happens (`lorarank.training.progresslog`):
    a long run can be watched while it trains, wherever it runs. Process zero alone writes."""

    def __init__(self, out: Path):
        self.path = Path(out) / progresslog.NAME

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:  # after a resume: global_step is the checkpoint's
            progresslog.start(self.path, state.global_step, state.max_steps)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero:
            progresslog.append(self.path, state.global_step, state.max_steps, logs or {})
        return control


def run_record(kind: str, settings, model: str, inputs: dict[str, str | None], lora_doc: dict | None) -> dict:
    """What makes a run this run: its identity, every setting that changes results, and the content of
    its inputs and base weights (hashed once: run.json records it, and a checkpoint resumes only under
    the same key)."""
    weights = weights_sha256(model)  # the weights, not just the path: a rebuilt model starts afresh
    strategy = lora_doc["allocation"]["strategy"] if lora_doc else None
    policy = lora_doc["alpha_policy"] if lora_doc else None
    profile = numerics.applied()  # the bits depend on it: a checkpoint of another profile does not resume
    record = {"identity": run_identity(kind, strategy, policy, settings.seed, weights),
              "settings": identity(settings), "numerics": identity(profile) if profile else None,
              "inputs": {k: file_hash(v) for k, v in inputs.items()}}
    if lora_doc:
        ranks = [m["r"] for m in lora_doc["modules"]]
        record["adapter_info"] = {"rank_min": min(ranks), "rank_max": max(ranks),
                                  "trainable_params": lora_doc["expected_trainable_params"]}
    return record


def run_key(record: dict) -> str:
    """A rerun with another allocation, seed, data or model starts afresh; where it writes, and how
    often it checkpoints, do not count."""
    inputs = {k: (v or {}).get("sha256") for k, v in record["inputs"].items()}
    content = [record["identity"], record["settings"], record.get("numerics"), inputs]
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def newest_checkpoint(out: Path) -> Path | None:
    found = []
    for d in (out / "checkpoints").glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if m and (d / MARKER).is_file():
            found.append((int(m.group(1)), d))
    return max(found)[1] if found else None


def resume(out: Path, profiler, key: str, allocator=None) -> str | None:
    """The newest complete checkpoint of this same run, its gradient log (and `allocator`'s state) restored;
    else None."""
    ckpt = newest_checkpoint(out)
    if ckpt is None:
        return None
    pickled = sorted(f.name for f in ckpt.glob("*.bin") if f.name != TRAINING_ARGS)  # Trainer's own record
    if pickled:
        raise UserError(f"checkpoint {str(ckpt)!r} holds pickled weights {pickled} (allowed: safetensors only, as "
                        f"this workflow writes them); delete {str(out / 'checkpoints')!r} to start afresh")
    if json.loads((ckpt / MARKER).read_text()).get("run_key") != key:
        print(f"lorarank: {ckpt} belongs to another run configuration; starting afresh", file=sys.stderr)
        shutil.rmtree(out / "checkpoints")
        return None
    profiler.load(ckpt / PARTIAL)
    if allocator is not None:
        allocator.load(ckpt)
    return str(ckpt)


def train_and_record(trainer, out: Path, record: dict, extra: dict, lora_doc: dict | None = None) -> dict:
    """Train (resuming where this run left off), then write the outputs and run.json. An AdaLoRA run's
    control is `trainer.adalora`: its state resumes with the run, its final ranks go in run.json."""
    from lorarank.training import ranklog

    profiler = trainer.profiler
    adalora = getattr(trainer, "adalora", None)
    ckpt = resume(out, profiler, run_key(record), adalora)
    result = trainer.train(resume_from_checkpoint=ckpt)
    info = {**record, **extra, "resumed_from": ckpt, "train_seconds": result.metrics.get("train_runtime"),
            "profiler_seconds": profiler.seconds, "weight_grad_seconds": profiler.weight_seconds,
            # ds_numel: a ZeRO-3 parameter's whole size (its numel() is this process's shard, often 0)
            "trainable_params": sum(getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters() if p.requires_grad),
            "world_size": trainer.args.world_size}  # data-parallel processes: batches and sampling follow it
    if adalora is not None:  # the ranks it ended with; trainable_params stays the count it started with
        info["adapter_info"] = {**info["adapter_info"], **adalora.summary()}
        info["allocator_seconds"] = adalora.seconds
    ranks = adalora.frame() if adalora is not None else ranklog.static(lora_doc) if lora_doc else None
    finish(trainer, profiler, out, info, ranks)
    return info


def save_final(trainer, final: Path) -> None:
    """The trained adapter (or model) into `final`, whole or not at all, as safetensors only.

    Through the Trainer, whose `save_model` gathers ZeRO-3's partitioned parameters (`model.save_pretrained`
    there writes each rank's empty shard); elsewhere it ends in the same `save_pretrained`, and the bytes are
    those it wrote before (measured: plain and ZeRO-2 adapters, the warm-up's model; published digests hold).
    Every process joins the gather, only process zero writes. The Trainer
    also pickles its arguments beside the weights (training_args.bin): dropped, since this workflow reads and
    ships no pickle, and the settings are in run.json."""
    if not trainer.is_world_process_zero():
        trainer.save_model(str(final))  # a collective under ZeRO-3; writes nothing on this process
        return
    with atomic_dir(final) as tmp:
        trainer.save_model(str(tmp))
        (tmp / TRAINING_ARGS).unlink(missing_ok=True)
        # a tokenizer may save a folder (transformers: additional_chat_templates/); a pickle may hide in one
        pickled = sorted(f.relative_to(tmp).as_posix() for f in tmp.rglob("*")
                         if f.suffix in (".bin", ".pt", ".pkl"))
        if pickled or not list(tmp.glob("*.safetensors")):  # e.g. ZeRO-3 without gathering: DeepSpeed's own files
            raise UserError(f"saving {str(final)!r} gave {pickled or 'no safetensors weights'} (allowed: safetensors "
                            f"only); under ZeRO-3 set stage3_gather_16bit_weights_on_model_save: true")


def finish(trainer, profiler, out: Path, run_info: dict, ranks=None) -> None:
    """Write the final outputs atomically; the checkpoints are no longer needed after this."""
    final = out / "final"
    save_final(trainer, final)
    if not trainer.is_world_process_zero():
        return
    with atomic_path(out / "grad_norms.parquet") as t:
        profiler.frame().to_parquet(t, index=False)
    if ranks is not None:
        with atomic_path(out / "ranks.parquet") as t:
            ranks.to_parquet(t, index=False)
    with atomic_path(out / "trainer_log.jsonl") as t:
        t.write_text("".join(json.dumps(r) + "\n" for r in trainer.state.log_history))
    weights = next(final.glob("*.safetensors"))
    run_info = {**run_info, "environment": describe(), "steps": trainer.state.global_step,
                "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                "output_sha256": {weights.name: sha256_file(weights)}}
    write_json(out / "run.json", run_info)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # only needed to resume an unfinished run
    (out / progresslog.NAME).unlink(missing_ok=True)  # only for watching it: trainer_log.jsonl has the steps


def file_hash(path: str | None) -> dict | None:
    return {"path": str(path), "sha256": sha256_file(path)} if path and os.path.isfile(path) else None
