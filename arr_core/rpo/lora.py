"""LoRA on the policy's transformer through peft, with the reference policy = the adapter switched off.

``get_peft_model`` injects LoRA layers into the transformer *in place* (the policy keeps calling its
own ``transformer``; it now carries the adapter), freezes every base weight and returns the
``PeftModel`` whose ``disable_adapter()`` context gives the base network exactly. peft's default
init (A Kaiming-uniform, B = 0) makes the LoRA'd network equal the base network bit for bit at step
0, so the KL to the reference is exactly 0 there; ``init_lora_weights="gaussian"`` does not.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model


def add_lora(transformer: torch.nn.Module, *, rank: int, alpha: float, targets: list[str],
             dropout: float = 0.0) -> PeftModel:
    """Wrap ``transformer`` with a fresh LoRA adapter named "default" (B = 0: output unchanged)."""
    if not targets:
        raise ValueError("LoRA targets must name at least one module (e.g. 'attn.to_q')")
    names = [n for n, _ in transformer.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ValueError(f"LoRA targets {missing} match no module of {type(transformer).__name__}")
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                     init_lora_weights=True)
    return get_peft_model(transformer, cfg)


def lora_parameters(model: PeftModel) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of the trainable LoRA weights, in a stable order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def base_parameters(model: PeftModel) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of the frozen base weights."""
    return [(n, p) for n, p in model.named_parameters() if "lora_" not in n]
