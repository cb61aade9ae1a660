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
"""

from __future__ import annotations

import contextlib
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
