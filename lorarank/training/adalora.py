"""AdaLoRA as a study arm: PEFT's AdaLoRA driven the way PEFT requires, which no trainer does.

AdaLoRA (Zhang et al. 2023) writes each adapter as P diag(E) Q and prunes singular values (entries of
E) during training to a global budget: one threshold over every adapted matrix, on an importance
score (EMA of |w dL/dw| times its uncertainty) summed over each (P column, E entry, Q row) triplet.
PEFT implements the model and the allocator, but nothing in transformers or TRL calls it. Here:

- `update_and_allocate(step)` runs once per optimizer step in the `on_optimizer_step` callback, which
  transformers' Trainer calls after `optimizer.step()` and before `model.zero_grad()`, only on the
  micro-batch that completes an accumulation (never on accumulation micro-steps), after clipping: the
  order PEFT's docstring asks for, and the AdaLoRA reference code's (clip, step, allocate, zero). The
  step passed is `global_step + 1` (the step just taken: the Trainer increments global_step only after
  the callback, and with global_step the final freeze at total_step - tfinal would never be reached).
- The orthogonality penalty (mean over P and Q of ||P P^T - I||_F): PEFT adds it only to a `loss` the
  model computes from `labels`. GRPO computes its loss from log-probs, so it would silently vanish.
  `AdaLoraTrainerMixin.compute_loss` adds it to the GRPO and the SFT loss alike, and PEFT's own copy is
  switched off (its weight set to 0 while training), so it counts exactly once in either regime. The
  trainers run one micro-batch per optimizer step, so the step's loss carries it once.
- The allocator keeps state outside the parameters (importance EMAs, the mask): it is saved in every
  checkpoint (`adalora_state.safetensors`) and restored on resume, so a killed run resumes
  bit-identically. PEFT's `rank_pattern` is kept out of the checkpoints' adapter config (PEFT would
  save, then reload, the adapter cut to the live ranks, which the optimizer state no longer fits); the
  final adapter is saved with it, in PEFT's compact form: `PeftModel.from_pretrained` loads it at the
  final ranks.
- DeepSpeed is refused: the engine steps and zeroes gradients inside `backward`, where no callback
  sees them, and ZeRO's fp32 master weights would undo the in-place masking of E. Plain or DDP only.

At the static arms' learning rate AdaLoRA hardly moves the weights in a short run: E starts at 0 and
P, Q at N(0, 0.02), so its update B diag(E) A grows from a product of small factors (measured on the
default miniature at LR 1e-3: after 40 GRPO steps ||dW|| was 40x smaller than uniform LoRA's, and the
reward stayed flat). `allocation.adalora.lr_scale` sets its rate as a multiple of the regime's
(`learning_rate`); run.json records the rate it trained at.

The live rank of a matrix is the count of singular values the mask keeps (PEFT's `r` and `ranknum`
stay at init_r; the scaling is lora_alpha / init_r throughout). The rank log (`lorarank.training.ranklog`)
records them at step 0 and at every reallocation.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from lorarank.allocation.adalora_settings import check_schedule, refuse_deepspeed
from lorarank.allocation.strategies import DYNAMIC
from lorarank.errors import UserError
from lorarank.io import atomic_path
from lorarank.training import ranklog

STATE = "adalora_state.safetensors"
ADAPTER = "default"
# ...layers.<i>.<path>.<module>.lora_E.default: the singular values of one adapted matrix
E_PARAM = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:\w+\.)*?(\w+)\.lora_E\.default$")


def is_dynamic(lora_doc: dict | None) -> bool:
    return bool(lora_doc) and lora_doc.get("adapter") == DYNAMIC


def check(lora_doc: dict | None, steps: int, deepspeed: str | None) -> None:
    """Refuse what AdaLoRA cannot do, in one line, before anything loads."""
    if not is_dynamic(lora_doc):
        return
    refuse_deepspeed(deepspeed)
    check_schedule(lora_doc["lora_config"]["tinit"], lora_doc["lora_config"]["tfinal"], steps)


def learning_rate(lr: float, lora_doc: dict | None) -> float:
    """The run's learning rate: an adalora arm's is the regime's times its `lr_scale` (allocation.adalora)."""
    return lr * lora_doc.get("lr_scale", 1.0) if is_dynamic(lora_doc) else lr


def orthogonality_penalty(params: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """PEFT's AdaLoRA regulariser: the mean over P (lora_A) and Q (lora_B) of ||P P^T - I||_F, ||Q^T Q - I||_F."""
    total = 0
    for name, p in params:
        cov = p @ p.T if ".lora_A." in name else p.T @ p
        total = total + torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device))
    return total / len(params)


class AdaLoraControl(TrainerCallback):
    """Drives one AdaLoRA model through training: allocation each optimizer step, the penalty's weight,
    the rank log, and the allocator's state in checkpoints (save/load, called by `runs`)."""

    def __init__(self, peft_model):
        self.tuner = peft_model.base_model  # AdaLoraModel
        self.config = self.tuner.peft_config[ADAPTER]
        self.allocator = self.tuner.rankallocator
        self.weight = float(self.config.orth_reg_weight)
        self.config.orth_reg_weight = 0.0  # the trainer adds the penalty, in both regimes (module doc)
        self.pairs = [(n, p) for n, p in self.tuner.model.named_parameters()
                      if (".lora_A." in n or ".lora_B." in n) and n.endswith(ADAPTER)]
        self.units = {}  # E parameter name (as PEFT's rank_pattern keys it) -> (layer, module)
        for n, p in self.tuner.model.named_parameters():
            m = E_PARAM.search(n)
            if m:
                self.units[n] = (int(m.group(1)), m.group(2))
        self.init_r = int(self.config.init_r)
        self.pattern: dict | None = None  # name -> kept singular values (list of bools), once allocated
        self.calls: list[int] = []  # the steps update_and_allocate ran at: one per optimizer step
        self.seconds = 0.0  # time in the allocator (benchmarks/training.py)
        self.rows: list[tuple] = []
        self._record(0, self.allocator.init_bgt)

    # ---------------------------------------------------------------- the schedule
    def freeze_step(self) -> int:
        return int(self.config.total_step) - int(self.config.tfinal)

    def reallocates(self, step: int) -> bool:
        """Does update_and_allocate(step) set a new mask? (PEFT: every deltaT-th step of the pruning phase,
        and the final one at total_step - tfinal.)"""
        if step == self.freeze_step():
            return True
        return step < self.freeze_step() and self.allocator.budget_schedule(step)[1]

    def live_ranks(self) -> dict[str, int]:
        if self.pattern is None:
            return {n: self.init_r for n in self.units}
        return {n: int(sum(self.pattern[n])) for n in self.units}

    def _record(self, step: int, budget: int) -> None:
        ranks = self.live_ranks()
        self.rows += [(step, *self.units[n], ranks[n], budget) for n in sorted(self.units, key=self.units.get)]

    # ---------------------------------------------------------------- training
    def on_optimizer_step(self, args, state, control, **kwargs):
        step = state.global_step + 1  # the step just taken (module doc)
        t0 = time.perf_counter()
        # PEFT reads and writes the mask in its config; it lives here between steps (module doc)
        self.config.rank_pattern = self.pattern
        self.tuner.update_and_allocate(step)
        self.pattern, self.config.rank_pattern = self.config.rank_pattern, None
        self.seconds += time.perf_counter() - t0
        self.calls.append(step)
        if self.reallocates(step):
            frozen = step >= self.freeze_step()
            self._record(step, self.allocator.target_bgt if frozen else self.allocator.budget_schedule(step)[0])
        return control

    def on_train_end(self, args, state, control, **kwargs):
        """The final adapter is saved at the live ranks (PEFT's compact form), with the penalty's real weight."""
        self.config.rank_pattern = self.pattern
        self.config.orth_reg_weight = self.weight
        return control

    def penalty(self) -> torch.Tensor:
        return self.weight * orthogonality_penalty(self.pairs)

    # ---------------------------------------------------------------- checkpoints
    def save(self, ckpt: Path) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for kind, table in (("ipt", self.allocator.ipt), ("avg", self.allocator.exp_avg_ipt),
                            ("unc", self.allocator.exp_avg_unc)):
            tensors.update({f"{kind}/{n}": t.detach().contiguous() for n, t in table.items()})
        for n, kept in (self.pattern or {}).items():
            tensors[f"mask/{n}"] = torch.tensor(kept, dtype=torch.bool)
        with atomic_path(ckpt / STATE) as tmp:
            save_file(tensors, str(tmp), metadata={"calls": json.dumps(self.calls), "rows": json.dumps(self.rows)})

    def load(self, ckpt: Path) -> None:
        from safetensors import safe_open

        path = ckpt / STATE
        if not path.is_file():
            raise UserError(f"checkpoint {str(ckpt)!r} lacks {STATE}: it is not from an adalora run")
        tables = {"ipt": self.allocator.ipt, "avg": self.allocator.exp_avg_ipt, "unc": self.allocator.exp_avg_unc}
        params = dict(self.tuner.model.named_parameters())
        pattern = {}
        with safe_open(str(path), "pt") as f:  # read onto the CPU
            meta = f.metadata()
            for key in f.keys():
                kind, name = key.split("/", 1)
                if kind == "mask":
                    pattern[name] = f.get_tensor(key).tolist()
                elif name not in params:
                    raise UserError(f"checkpoint {str(ckpt)!r}: allocator state for {name}, which this model lacks")
                else:  # onto its parameter's device: PEFT's next update_ipt mixes them (a GPU run would crash)
                    tables[kind][name] = f.get_tensor(key).to(params[name].device)
        self.pattern = pattern or None
        self.calls = json.loads(meta["calls"])
        self.rows = [tuple(r) for r in json.loads(meta["rows"])]

    # ---------------------------------------------------------------- results
    def frame(self):
        return ranklog.frame(self.rows)

    def summary(self) -> dict:
        """What run.json records about the allocation the run ended with."""
        ranks = self.live_ranks()
        dims = {n: self._dims(n) for n in self.units}
        final = list(ranks.values())
        return {"rank_min": min(final), "rank_max": max(final), "rank_total_final": sum(final),
                "target_budget": int(self.allocator.target_bgt), "initial_budget": int(self.allocator.init_bgt),
                # a rank costs in + out + 1 parameters here: its row of P, column of Q and singular value
                "effective_params_final": sum(ranks[n] * (dims[n][0] + dims[n][1] + 1) for n in self.units),
                "allocator_calls": len(self.calls), "freeze_step": self.freeze_step()}

    def _dims(self, e_name: str) -> tuple[int, int]:
        a = dict(self.pairs)[e_name.replace(".lora_E.", ".lora_A.")]
        b = dict(self.pairs)[e_name.replace(".lora_E.", ".lora_B.")]
        return int(a.shape[1]), int(b.shape[0])


class AdaLoraTrainerMixin:
    """Mix into a TRL trainer (`adalora=` an AdaLoraControl or None): adds the orthogonality penalty to the
    loss the trainer computes, whatever it computes it from."""

    def __init__(self, *args, adalora: AdaLoraControl | None = None, **kwargs):
        self.adalora = adalora
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if self.adalora is None or not model.training:
            return out
        if return_outputs:
            loss, outputs = out
            return loss + self.adalora.penalty(), outputs
        return out + self.adalora.penalty()


def control(peft_model, lora_doc: dict | None) -> AdaLoraControl | None:
    return AdaLoraControl(peft_model) if is_dynamic(lora_doc) else None
