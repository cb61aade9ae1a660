"""How the policy network runs: which attention kernels PyTorch may pick, and regional compilation.

Attention. ``torch.nn.functional.scaled_dot_product_attention`` picks one of several kernels (flash,
memory-efficient, cuDNN, math). PyTorch's cuDNN SDPA backend crashed the first backward of a
FLUX.1-dev-sized transformer on an H200 (torch 2.11 + CUDA 13: "an illegal memory access", under
``CUDA_LAUNCH_BLOCKING`` "mha_graph.execute(...).is_good()"; upstream pytorch#134001, #190321,
#196678), so ``auto`` allows flash, efficient and math but never cuDNN. On CPU only flash and math
exist, so ``auto`` selects exactly what PyTorch would pick by default there; ``efficient`` and
``cudnn`` are CUDA-only and are refused on CPU by name. The context manager is
``torch.nn.attention.sdpa_kernel`` (global backend flags, restored on exit); the trainer enters it
around warm-up, rollouts and training (backward included: gradient checkpointing recomputes
attention there), the step benchmark around its FLOP count and its run.

Regional compilation. ``torch.compile`` of the whole transformer took 159 s of warm-up on FLUX.1-dev
(545 vs 396 TFLOP/s eager, NOTES.md); compiling the repeated blocks instead compiles one graph per
block class and reuses it for every block of that class (the PyTorch regional-compilation recipe,
diffusers' ``ModelMixin.compile_repeated_blocks``). Blocks are compiled in place
(``nn.Module.compile``), so parameter names, the LoRA and checkpoints are unchanged.

Micro-batch size from free memory (``rollout_batch_size: auto``). The rollout batch is also the
training micro-batch (the same batch keeps the on-policy ratio exactly 1), so one size is chosen: the
trainer measures the peak CUDA memory of one image (``measure_peak_bytes`` around a rollout of one
prompt with G = 1 and one trained step's forward and backward, eager, before compilation) and
``choose_batch_size`` divides the free memory (``free_device_bytes``, less a safety margin) by it.
Where nothing can be measured (CPU) the documented default is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

ATTENTION_BACKENDS: dict[str, tuple[SDPBackend, ...]] = {
    "auto": (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH),
    "flash": (SDPBackend.FLASH_ATTENTION,),
    "efficient": (SDPBackend.EFFICIENT_ATTENTION,),
    "cudnn": (SDPBackend.CUDNN_ATTENTION,),
    "math": (SDPBackend.MATH,),
}
_CUDA_ONLY = ("efficient", "cudnn")


def sdpa_backends(name: str) -> list[SDPBackend]:
    """The SDPA kernels the setting ``name`` allows (``auto``: flash, efficient, math; never cuDNN)."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention_backend must be one of {sorted(ATTENTION_BACKENDS)}, got {name!r}")
    return list(ATTENTION_BACKENDS[name])


def attention_context(name: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """``sdpa_kernel(sdpa_backends(name))`` for work on ``device``; CUDA-only kernels on CPU raise."""
    backends = sdpa_backends(name)
    if torch.device(device).type == "cpu" and name in _CUDA_ONLY:
        raise ValueError(f"attention_backend {name!r} is a CUDA kernel; on CPU use 'auto', 'flash' or 'math'")
    return sdpa_kernel(backends)


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks: the classes named in diffusers' ``_repeated_blocks`` when the model
    declares them, else the entries of every outermost ``nn.ModuleList`` whose (≥ 2) entries share
    one class (e.g. a plain transformer's layer list)."""
    names = getattr(model, "_repeated_blocks", None) or ()
    if names:
        return [m for m in model.modules() if type(m).__name__ in names]
    blocks: list[torch.nn.Module] = []
    taken: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(t + ".") for t in taken):
            continue  # inside a block already taken: compiled with it
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 1 and len({type(c) for c in mod}) == 1:
            blocks.extend(mod)
            taken.append(name)
    return blocks


def compile_repeated_blocks(model: torch.nn.Module, **compile_kwargs: Any) -> int:
    """Regional ``torch.compile``: compile each repeated block of ``model`` in place; returns how many.

    Call after LoRA injection (the compiled graphs then include the adapter; ``disable_adapter()``
    compiles a second variant on first use). ``compile_kwargs`` go to ``torch.compile``.
    """
    blocks = repeated_blocks(model)
    if not blocks:
        raise ValueError(f"compile: {type(model).__name__} has no repeated blocks to compile (no "
                         "_repeated_blocks and no ModuleList of equal blocks); set compile: false")
    if getattr(model, "_repeated_blocks", None) and hasattr(model, "compile_repeated_blocks"):
        model.compile_repeated_blocks(**compile_kwargs)  # diffusers' own: the same blocks, in place
    else:
        for block in blocks:
            block.compile(**compile_kwargs)
    return len(blocks)


# rollout_batch_size: auto. Prompts per rollout batch where memory cannot be measured (CPU): the
# config's own default. The cap: beyond ~8 prompts × G = 2 images a FLUX-size forward saturates one
# H200 (the table: 0.33 → 0.47 img/s from 4 to 8 images), and a longer batch only delays the
# judge. The margin keeps back a share of the free memory plus a fixed reserve for what one image's
# probe does not see (allocator fragmentation, the AdamW state created at the first step).
AUTO_BATCH_DEFAULT = 2
AUTO_BATCH_CAP = 8
AUTO_MARGIN = 0.15
AUTO_RESERVE_BYTES = 2 * 2**30


@dataclass(frozen=True)
class BatchChoice:
    """The chosen prompts per rollout batch and why (logged; written next to each checkpoint)."""

    size: int
    reason: str
    free_bytes: int | None = None
    per_image_bytes: int | None = None


def choose_batch_size(prompts_per_step: int, group_size: int, *, free_bytes: int | None = None,
                      per_image_bytes: int | None = None, unmeasured: str = "no device memory to measure",
                      default: int = AUTO_BATCH_DEFAULT, cap: int = AUTO_BATCH_CAP, margin: float = AUTO_MARGIN,
                      reserve_bytes: int = AUTO_RESERVE_BYTES) -> BatchChoice:
    """Prompts per rollout batch for ``rollout_batch_size: auto`` (a pure function of its inputs).

    The size is a divisor of ``prompts_per_step`` (every batch has the same shape), at most ``cap`` and
    at most half of ``prompts_per_step`` (at least two batches, so the judge scores one while the next
    is sampled). With ``free_bytes`` and ``per_image_bytes`` measured it is the largest such size whose
    b·G images fit in free·(1 − margin) − reserve; with either missing, the largest such size up to
    ``default`` (``unmeasured`` says why). When not even one prompt fits, 1, and the reason says so.
    """
    if prompts_per_step < 1 or group_size < 1:
        raise ValueError(f"prompts_per_step and group_size must be >= 1, got {prompts_per_step}, {group_size}")
    limit = max(1, min(cap, prompts_per_step // 2))
    sizes = [d for d in range(1, limit + 1) if prompts_per_step % d == 0]
    bounds = f"a divisor of prompts_per_step {prompts_per_step}, at most {limit} (cap {cap}, two batches)"
    if free_bytes is None or per_image_bytes is None:
        size = max(d for d in sizes if d <= max(1, default))
        return BatchChoice(size, f"{unmeasured}: the default {default} → {size} ({bounds})")
    if per_image_bytes <= 0:
        raise ValueError(f"per_image_bytes must be > 0, got {per_image_bytes}")
    usable = free_bytes * (1 - margin) - reserve_bytes
    fit = int(usable // (per_image_bytes * group_size)) if usable > 0 else 0
    gib = 2**30
    measured = (f"free {free_bytes / gib:.2f} GiB, {per_image_bytes / gib:.3f} GiB per image (probe), usable "
                f"{max(usable, 0) / gib:.2f} GiB after {margin:.0%} + {reserve_bytes / gib:.1f} GiB")
    if fit < 1:
        return BatchChoice(1, f"{measured}: not even one prompt's {group_size} images fit; using 1 (may run "
                           "out of memory: lower the resolution or turn on gradient_checkpointing)",
                           free_bytes, per_image_bytes)
    size = max(d for d in sizes if d <= fit)
    return BatchChoice(size, f"{measured}: {fit} prompts × G={group_size} fit → {size} ({bounds})",
                       free_bytes, per_image_bytes)


def free_device_bytes(device: torch.device | str) -> int | None:
    """Memory a CUDA device can still give this process: the driver's free memory plus what PyTorch's
    caching allocator holds unused; None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def measure_peak_bytes(fn: Callable[[], None], device: torch.device | str) -> int:
    """Peak CUDA memory ``fn()`` allocates above what was allocated before it
    (``torch.cuda.max_memory_allocated`` delta). CUDA only: there is no such counter on CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"measure_peak_bytes needs a CUDA device, got {device}")
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)
