"""RPO checkpoints: the LoRA in diffusers' format plus everything an exact resume needs.

Layout of one checkpoint folder::

    lora/pytorch_lora_weights.safetensors   # `pipe.load_lora_weights(folder/"lora")` accepts it
    trainer_state.pt                        # LoRA tensors (peft names), AdamW, LR scheduler, step,
                                            # data position, config digest
    rng_rank{r}.pt                          # python / numpy / torch CPU / CUDA / sampler generator
    COMPLETE.json                           # the manifest, written last: step and file sizes

Every file is written to a temporary name, fsynced and renamed; the manifest comes last, after every
rank has written its files. A checkpoint without a manifest (a kill during the write) is never resumed
from: ``find_checkpoint`` takes the newest complete one. The LoRA export's bytes are canonical (its
safetensors header is re-serialised with sorted keys), so identical runs write identical files.

The LoRA file is written with diffusers' own ``save_lora_weights`` (keys ``transformer.<module>.lora_A
.weight``) together with the adapter's peft config as metadata, so loading keeps alpha/rank (without
the metadata diffusers would assume alpha = rank, i.e. a different scale). The resume path copies the
exact fp32 tensors from ``trainer_state.pt``; the safetensors file is the export.
Checkpoints are trusted local files written by this module (``torch.load(weights_only=False)`` is
needed for numpy's RNG state).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel, get_peft_model_state_dict

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
MANIFEST = "COMPLETE.json"
_PEFT_PREFIX = "base_model.model."


def _full(t: torch.Tensor) -> torch.Tensor:
    """A plain CPU copy; FSDP2-sharded parameters (DTensor) are gathered first (a collective: every
    rank must call this)."""
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return t.detach().to("cpu").contiguous()


def is_sharded(peft_model: PeftModel) -> bool:
    return any(hasattr(p, "full_tensor") for p in peft_model.parameters() if p.requires_grad)


def lora_state_dict_diffusers(peft_model: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter's weights keyed by the transformer's module names (``<module>.lora_A.weight``)."""
    sd = get_peft_model_state_dict(peft_model)
    out = {}
    for k, v in sd.items():
        if not k.startswith(_PEFT_PREFIX):
            raise ValueError(f"unexpected peft state-dict key {k!r} (expected prefix {_PEFT_PREFIX!r})")
        out[k[len(_PEFT_PREFIX):]] = _full(v)
    return out


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    _fsync_replace(tmp, path)


def canonicalize_safetensors(path: Path) -> None:
    """Rewrite a safetensors file's JSON header with sorted keys (the Rust writer orders the metadata
    map differently from run to run); tensors and their offsets are unchanged. Written atomically."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header with spaces to 8-byte alignment
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
    _fsync_replace(tmp, path)


def save_lora(peft_model: PeftModel, folder: str | Path, is_main: bool = True) -> Path:
    """Write the LoRA as ``folder/pytorch_lora_weights.safetensors`` for ``pipe.load_lora_weights(folder)``.

    Uses ``FluxLoraLoaderMixin.save_lora_weights``; SD3, Qwen-Image and the other single-transformer
    loaders read the same ``transformer.``-prefixed layout. Under FSDP every rank must call it (the
    shards are gathered); only ``is_main`` writes.
    """
    from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin

    folder = Path(folder)
    state = lora_state_dict_diffusers(peft_model)
    if not is_main:
        return folder / LORA_WEIGHT_NAME
    folder.mkdir(parents=True, exist_ok=True)
    meta = peft_model.peft_config["default"].to_dict()
    # JSON-able metadata: peft keeps target_modules as a set.
    meta = {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}
    bad = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if bad:  # never export a diverged adapter
        raise ValueError(f"refusing to save a LoRA with non-finite weights ({len(bad)} tensors, first {bad[0]})")
    FluxLoraLoaderMixin.save_lora_weights(folder, transformer_lora_layers=state,
                                          transformer_lora_adapter_metadata=meta, weight_name=LORA_WEIGHT_NAME)
    canonicalize_safetensors(folder / LORA_WEIGHT_NAME)
    return folder / LORA_WEIGHT_NAME


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "sampler": generator.get_state(),
        "sampler_device": str(generator.device),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if str(generator.device) != state["sampler_device"]:
        raise ValueError(f"checkpoint sampler generator was on {state['sampler_device']}, now {generator.device}")
    generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: str | Path, *, peft_model: PeftModel, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator, step: int,
                    data_state: dict[str, int], config_digest: str, rank: int = 0, is_main: bool = True) -> Path:
    """Write a resumable checkpoint after ``step`` completed steps. Every rank writes its RNG file and
    takes part in gathering FSDP shards; the main rank writes the LoRA, optimizer and scheduler
    (identical on all ranks under DDP; gathered to full tensors under FSDP)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_torch_save({"rng": rng_state(generator), "data": dict(data_state)}, folder / f"rng_rank{rank}.pt")
    save_lora(peft_model, folder / "lora", is_main=is_main)
    lora = {n: _full(p) for n, p in peft_model.named_parameters() if p.requires_grad}
    if is_sharded(peft_model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optim_state = get_optimizer_state_dict(peft_model, optimizer,
                                               options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        optim_state = optimizer.state_dict()
    if is_main:
        _atomic_torch_save({"step": step, "lora": lora, "optimizer": optim_state,
                            "scheduler": scheduler.state_dict(), "config_digest": config_digest},
                           folder / "trainer_state.pt")
    return folder


def write_manifest(folder: str | Path, step: int) -> None:
    """Mark a checkpoint complete (call after every rank wrote its files): step and file sizes."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp")}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"step": step, "files": files}, indent=1, sort_keys=True), encoding="utf-8")
    _fsync_replace(tmp, folder / MANIFEST)


def is_complete(folder: Path) -> bool:
    """The manifest exists and every file it lists has its recorded size."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == size
               for name, size in manifest.get("files", {}).items())


def find_checkpoint(path: str | Path) -> Path:
    """``path`` itself if it is a complete checkpoint, else the newest complete ``checkpoints/step_*``
    under a run folder (incomplete ones, e.g. from a kill during the write, are skipped)."""
    path = Path(path)
    if (path / "trainer_state.pt").exists() or (path / MANIFEST).exists():
        if not is_complete(path):
            raise FileNotFoundError(f"checkpoint {path} is incomplete (no valid {MANIFEST}: interrupted while it "
                                    "was written); resume from the run folder to use the newest complete one")
        return path
    cands = [d for d in sorted((path / "checkpoints").glob("step_*")) if is_complete(d)]
    if not cands:
        raise FileNotFoundError(f"no complete checkpoint in {path} (expected checkpoints/step_*/ with {MANIFEST})")
    return cands[-1]


def incomplete_after(run_or_ckpt: str | Path, chosen: Path) -> list[Path]:
    """Checkpoint folders newer than ``chosen`` that are incomplete (skipped by a resume)."""
    root = Path(run_or_ckpt) / "checkpoints"
    return [d for d in sorted(root.glob("step_*")) if d.name > chosen.name and not is_complete(d)]


def load_checkpoint(folder: str | Path, *, peft_model: PeftModel, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator,
                    config_digest: str, rank: int = 0) -> tuple[int, dict[str, int]]:
    """Restore a checkpoint in place; returns (completed steps, data state)."""
    folder = find_checkpoint(folder)
    state = torch.load(folder / "trainer_state.pt", map_location="cpu", weights_only=False)
    if state["config_digest"] != config_digest:
        raise ValueError(f"checkpoint {folder} was written with a different training config "
                         f"(digest {state['config_digest']} vs {config_digest}); resume needs the same config")
    params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    if set(params) != set(state["lora"]):
        raise ValueError(f"checkpoint {folder}: LoRA parameter names differ from the model's")
    sharded = is_sharded(peft_model)
    with torch.no_grad():
        for n, p in params.items():
            full = state["lora"][n].to(p.device)
            if sharded:
                from torch.distributed.tensor import distribute_tensor

                full = distribute_tensor(full, p.device_mesh, p.placements)
            p.copy_(full)
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(peft_model, optimizer, state["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_file = folder / f"rng_rank{rank}.pt"
    if not rng_file.is_file():
        raise FileNotFoundError(f"{rng_file} missing: resume with the same number of processes")
    rs = torch.load(rng_file, map_location="cpu", weights_only=False)
    set_rng_state(rs["rng"], generator)
    return int(state["step"]), dict(rs["data"])
