"""AdaLoRA's settings (config `allocation.adalora`, flags of `lorarank allocate --strategy adalora`) and
every check on them, each written once: the allocation, the LoRA config, training (`lorarank.training.adalora`)
and the workflow's config check call these.

Standard library only: the workflow's config check runs them on a submit host.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction

from lorarank.allocation.strategies import DYNAMIC
from lorarank.argtypes import positive_float, positive_int
from lorarank.errors import UserError
from lorarank.options import opt

ADALORA = {"strategy": (DYNAMIC,)}  # the fields are read (and passed by the workflow) for the adalora arm only


@dataclass
class AdaLoraSettings:
    """PEFT's AdaLoraConfig, all but its budget (the allocation's) and total_step (the run's). beta1/beta2
    are the paper's and PEFT's."""

    init_r: int = opt(12, "adalora: initial rank of every adapted matrix, above the mean target rank (the paper "
                          "starts at 1.5x the target)", type=positive_int, when=ADALORA)
    tinit: int = opt(5, "adalora: steps at the initial budget before pruning starts (its importance "
                        "estimates need a few steps)", when=ADALORA)
    tfinal: int = opt(10, "adalora: last steps at the final budget, ranks frozen: the adapter settles", when=ADALORA)
    delta_t: int = opt(1, "adalora: steps between reallocations during pruning", type=positive_int, when=ADALORA)
    beta1: float = opt(0.85, "adalora: EMA coefficient of the sensitivity |w * dL/dw|, in (0, 1)", when=ADALORA)
    beta2: float = opt(0.85, "adalora: EMA coefficient of its uncertainty, in (0, 1)", when=ADALORA)
    orth_reg_weight: float = opt(0.5, "adalora: weight of the penalty that keeps P and Q orthogonal (PEFT's "
                                      "default; the paper used 0.1)", when=ADALORA)
    lr_scale: float = opt(1.0, "adalora: its learning rate as a multiple of the regime's (1: the same rate as the "
                               "static arms; AdaLoRA starts E at 0 and P, Q at N(0, 0.02), so at the same rate its "
                               "update grows far slower)", type=positive_float, when=ADALORA)

    def adalora_params(self) -> dict:
        """The settings as the allocation file records them (`params`), for `lorarank.allocation.lora` to build from."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(AdaLoraSettings)}

    def check_adalora(self, budget: int, num_layers: int | None = None) -> None:
        for name in ("beta1", "beta2"):
            if not 0 < getattr(self, name) < 1:
                raise UserError(f"--{name} {getattr(self, name)} is outside (0, 1)")
        for name in ("tinit", "tfinal", "orth_reg_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)} must be >= 0")
        if num_layers is not None:
            check_init_r(self.init_r, Fraction(budget, num_layers), f" (--budget {budget} over {num_layers} layers)")


def check_init_r(init_r: int, mean_rank, where: str = "", what: str = "--init-r") -> None:
    """AdaLoRA prunes from init_r down: it must start above the mean target rank (budget / layers)."""
    if init_r <= mean_rank:
        raise UserError(f"{what} {init_r} is not above the mean target rank {float(mean_rank):g}{where}: AdaLoRA "
                        f"prunes from init_r down to the budget (the paper starts at 1.5x the target)")


def check_schedule(tinit: int, tfinal: int, steps: int, what: str = "--steps") -> None:
    """AdaLoRA's schedule needs a pruning phase: tinit + tfinal < the run's optimizer steps."""
    if tinit + tfinal >= steps:
        raise UserError(f"{what} {steps}: AdaLoRA's tinit {tinit} + tfinal {tfinal} = {tinit + tfinal} leaves no "
                        f"pruning phase (it needs tinit + tfinal < steps)")


def refuse_deepspeed(deepspeed: str | None) -> None:
    """AdaLoRA cannot run under DeepSpeed: the engine steps and zeroes gradients inside backward, where no
    callback sees them, and ZeRO's fp32 master weights would undo the in-place masking of E."""
    if deepspeed:
        raise UserError(f"--deepspeed {deepspeed}: AdaLoRA cannot run under DeepSpeed (the engine zeroes gradients "
                        f"inside backward, before AdaLoRA's allocator can read them, and ZeRO's fp32 master weights "
                        f"would undo its masking); run it without --deepspeed (plain or DDP)")
