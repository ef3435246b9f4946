"""Rank allocation: turn an allocation spec into integer LoRA ranks at an exact budget.

    python -m lorarank allocate --strategy uniform --budget 896 --num-layers 28 --out allocations/uniform.json
    python -m lorarank allocate --strategy proportional --budget 896 \
        --grad-log runs/uniform/seed0/grad_norms.parquet --out allocations/proportional.json

The budget is the sum of per-layer ranks (the study: 896 = 28 x 32). The package, in the order a spec
travels through it (this file holds only the map: importing a module of the package imports nothing else):

  allocate          the command
  strategies        the registry: what each strategy reads and how it weighs the units
  spec              AllocationSpec (the command's flags, the config's `allocation:` keys) and its checks
  adalora_settings  AdaLoRA's settings and their checks, shared with the LoRA config, training and the workflow
  ranks             the inputs a strategy reads, integer ranks at the exact budget, the allocation document
  rounding          the one rounding rule: water-filling, then largest remainder, in exact arithmetic
  lora              `lorarank lora-config`: the exact, verified PEFT LoraConfig of an allocation
  patterns          `lorarank check-pattern`: lint a hand-written rank_pattern/alpha_pattern
"""
