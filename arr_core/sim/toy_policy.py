"""The toy policy of the scene world: a small text-to-image rectified-flow model in pixel space.

It stands in for FLUX / SD3 (DESIGN.md, "Embedded defaults") so that RPO can be run, tested and
benchmarked on a CPU. It is built only from real library classes:

- text: a word-level ``CLIPTokenizer`` over the scene world's ``prompt_vocabulary()`` (built in
  memory) and a 2-layer ``CLIPTextModel`` (width 64) from config; its last hidden states (b, l, 64)
  and the attention mask are the conditioning;
- image: a ``PixArtTransformer2DModel`` (PixArt-α's DiT with cross-attention to text and adaLN-single
  timestep conditioning) on 32 × 32 RGB pixels with 2 × 2 patches (256 tokens), width 96, 4 blocks,
  no VAE. With 4 × 4 patches (4× cheaper) the pretrained model drew patch-aligned square blobs: the
  scene's objects are only 5–8 px wide. ``image_size`` 64 with ``patch_size`` 4 (``arr toy pretrain
  --image-size 64 --patch-size 4``) keeps 256 tokens at the same cost per step and draws the objects
  at the detector's 64 px (10–16 px wide); ``decode`` then returns the pixels without resampling.

The transformer predicts the clean image x̂₀ (x-prediction) and ``velocity`` converts it,
v = (x_σ − x̂₀)/σ. Li & He (2025, "Back to Basics: Let Denoising Generative Models Denoise", JiT) show
that pixel-space DiTs with large patches fail with ε/v-prediction and work with x-prediction; here a
v-predicting model left patch-sized colour speckle after 250 steps, the x-predicting one a clean
background. σ in the denominator is clamped at ``sigma_min`` (0.05, as JiT's t-clip) for σ → 0.

Classifier-free guidance (optional, ``guidance_scale`` > 1, stored in ``toy_policy.json``): x̂₀ =
x̂₀(∅) + s·(x̂₀(text) − x̂₀(∅)) with ∅ the empty prompt, both branches in one batch; it needs a
checkpoint pretrained with ``arr toy pretrain --cond-dropout``. In RPO both branches carry the LoRA
(as Flow-GRPO trains SD3.5 with CFG), so rollouts, trained steps and the KL reference are guided alike.

Convention (rectified flow, as the ``Policy`` protocol): x_σ = (1−σ)·x₀ + σ·ε with x₀ the image
scaled to [−1, 1], ``velocity`` returns v ≈ ε − x₀, sampling runs σ = 1 → 0. The network's timestep
input is 1000·σ (PixArt's sinusoidal embedding expects 0..1000).

Deviations from PixArt-α, on purpose: pixel space instead of a VAE latent (the scene world's images
are flat-coloured shapes and 32 px keeps CPU training to minutes), a word-level CLIP encoder trained
jointly with the transformer instead of a frozen T5, no aspect-ratio/resolution conditioning, and
x-prediction with flow matching instead of ε-prediction. ``decode`` upsamples the 32 px output to 64 px
(bicubic) because the scene detector reads 64 px images more reliably (99.6 % vs 88 % GenEval-format
accuracy on clean 32 px renders, measured on 240 prompts).

The shipped base checkpoint (``arr_core/sim/assets/toy_policy``) is made by ``arr toy pretrain``
(``arr_core/sim/toy_pretrain.py``; command, time and accuracy in ``docs/toy.md``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from arr_core.rpo.policy import Cond

FORMAT = "arr-toy-policy/1"
CONFIG_FILE = "toy_policy.json"
# Special tokens of the word-level tokenizer (CLIP's names; pad = end of text, as in CLIP).
BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
# Self- and cross-attention projections of every PixArt block (peft matches name suffixes).
LORA_TARGETS = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"]
_NO_EXTRA_COND = {"resolution": None, "aspect_ratio": None}


def default_config() -> dict[str, Any]:
    """Architecture and sampling settings of a fresh toy policy (the shipped checkpoint uses these)."""
    from arr_core.sim.world import prompt_vocabulary

    return {
        "format": FORMAT,
        "vocab": list(prompt_vocabulary()),
        "max_length": 16,  # longest scene-world prompt: 11 words + BOS + EOS
        "text_width": 64,
        "text_layers": 2,
        "text_heads": 2,
        "image_size": 32,
        "patch_size": 2,
        "width": 96,
        "layers": 4,
        "head_dim": 32,
        "decode_size": 64,
        "shift": 1.0,
        "sigma_min": 0.05,
        "guidance_scale": 1.0,
    }


def build_tokenizer(vocab: list[str], max_length: int) -> Any:
    """Word-level ``CLIPTokenizer``: one token per vocabulary word, BOS/EOS like CLIP, unknown → UNK.

    ``CLIPTokenizer`` is a BPE tokenizer; with ``ignore_merges`` a word found whole in the vocabulary
    becomes one token, so no merges are needed. ``ignore_merges`` is not kept by ``save_pretrained``,
    so the tokenizer is always rebuilt from the vocabulary stored in ``toy_policy.json``.
    """
    from transformers import CLIPTokenizer

    if len(set(vocab)) != len(vocab) or not all(isinstance(w, str) and w.isalpha() for w in vocab):
        raise ValueError("vocab must be distinct alphabetic words (prompt_vocabulary())")
    table = {BOS: 0, EOS: 1, UNK: 2}
    for w in vocab:
        table[w.lower()] = len(table)
    tok = CLIPTokenizer(vocab=table, merges=[], unk_token=UNK, model_max_length=max_length)
    tok._tokenizer.model.ignore_merges = True  # the backend BPE model; see the docstring
    return tok


def build_modules(config: dict[str, Any], seed: int = 0) -> tuple[Any, Any]:
    """(text encoder, transformer) with random weights drawn from ``seed``; global RNG untouched."""
    from diffusers import PixArtTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if config["width"] % config["head_dim"]:
        raise ValueError(f"width ({config['width']}) must be a multiple of head_dim ({config['head_dim']})")
    if config["image_size"] % config["patch_size"]:
        raise ValueError("image_size must be a multiple of patch_size")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(config["vocab"]) + 3, hidden_size=config["text_width"],
            intermediate_size=2 * config["text_width"], num_attention_heads=config["text_heads"],
            num_hidden_layers=config["text_layers"], max_position_embeddings=config["max_length"],
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_act="gelu"))
        transformer = PixArtTransformer2DModel(
            sample_size=config["image_size"], patch_size=config["patch_size"], in_channels=3,
            out_channels=3, num_layers=config["layers"], attention_head_dim=config["head_dim"],
            num_attention_heads=config["width"] // config["head_dim"], cross_attention_dim=config["width"],
            caption_channels=config["text_width"], use_additional_conditions=False)
    return text_encoder, transformer


def shipped_checkpoint_dir() -> Path:
    """The folder of the shipped base checkpoint (``arr_core/sim/assets/toy_policy``)."""
    return Path(str(resources.files("arr_core.sim").joinpath("assets").joinpath("toy_policy")))


class ToyPolicy:
    """The toy text-to-image policy (implements ``arr_core.rpo.policy.Policy``).

    Shapes: latents (b, 3, 32, 32) fp32 pixels in [−1, 1] at σ = 0; conditioning
    ``{"prompt_embeds": (b, l, 64), "prompt_mask": (b, l)}`` with l = ``max_length``.
    """

    name = "toy"

    def __init__(self, config: dict[str, Any], text_encoder: Any, transformer: Any, *,
                 device: str | torch.device = "cpu", source: str | None = None,
                 guidance_scale: float | None = None) -> None:
        self.config = dict(config)
        if guidance_scale is not None:
            self.config["guidance_scale"] = float(guidance_scale)
        scale = float(self.config.setdefault("guidance_scale", 1.0))  # older checkpoints: no guidance
        if not scale >= 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 switches guidance off), got {scale}")
        self.tokenizer = build_tokenizer(self.config["vocab"], self.config["max_length"])
        self.device = torch.device(device)
        self.text_encoder = text_encoder.to(self.device).eval()
        self.transformer = transformer.to(self.device).eval()
        self.lora_targets = list(LORA_TARGETS)
        self.source = source

    # ------------------------------------------------------------------ construction and files

    @classmethod
    def random(cls, seed: int = 0, device: str | torch.device = "cpu", **overrides: Any) -> ToyPolicy:
        """An untrained policy (``default_config()`` with ``overrides``), weights drawn from ``seed``."""
        config = default_config()
        unknown = sorted(set(overrides) - set(config))
        if unknown:
            raise ValueError(f"unknown toy policy config fields {unknown}; known: {sorted(config)}")
        config.update(overrides)
        text_encoder, transformer = build_modules(config, seed)
        return cls(config, text_encoder, transformer, device=device, source=None)

    @classmethod
    def load(cls, path: Path | str | None = None, device: str | torch.device = "cpu",
             guidance_scale: float | None = None) -> ToyPolicy:
        """Load a policy folder written by ``save``; ``None`` loads the shipped base checkpoint.
        ``guidance_scale`` overrides the folder's (``toy_policy.json``; 1 when absent)."""
        if path is None:
            ref = resources.files("arr_core.sim").joinpath("assets").joinpath("toy_policy")
            with resources.as_file(ref) as folder:
                policy = cls._load_folder(Path(folder), device, guidance_scale)
            policy.source = "arr_core/sim/assets/toy_policy"
            return policy
        return cls._load_folder(Path(path), device, guidance_scale)

    @classmethod
    def _load_folder(cls, folder: Path, device: str | torch.device, guidance_scale: float | None) -> ToyPolicy:
        from diffusers import PixArtTransformer2DModel
        from transformers import CLIPTextModel

        cfg_path = folder / CONFIG_FILE
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{folder} is not a toy policy folder: {CONFIG_FILE} is missing "
                                    "(make one with `arr toy pretrain --out DIR`)")
        config = json.loads(cfg_path.read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{cfg_path}: field 'format' is {config.get('format')!r}, expected {FORMAT!r}")
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
        transformer = PixArtTransformer2DModel.from_pretrained(folder / "transformer")
        return cls(config, text_encoder, transformer, device=device, source=str(folder),
                   guidance_scale=guidance_scale)

    def save(self, path: Path | str, extra: dict[str, Any] | None = None) -> Path:
        """Write ``toy_policy.json`` (config + ``extra``, e.g. pretraining facts), ``text_encoder/``
        and ``transformer/`` (``save_pretrained``, safetensors) under ``path``; returns ``path``.

        Saves the base network only: a transformer wrapped by peft must be merged or unwrapped first.
        """
        from peft import PeftModel

        if isinstance(self.transformer, PeftModel):
            raise ValueError("save() writes the base toy policy; the transformer carries a peft adapter "
                             "(save the adapter with the trainer's checkpoint instead)")
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.text_encoder.save_pretrained(out / "text_encoder")
        self.transformer.save_pretrained(out / "transformer")
        config = dict(self.config)
        if extra:
            config.update(extra)
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
        return out

    def to(self, device: str | torch.device) -> ToyPolicy:
        self.device = torch.device(device)
        self.text_encoder.to(self.device)
        self.transformer.to(self.device)
        return self

    # ------------------------------------------------------------------ the Policy protocol

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), both (b, l) int64 on the policy's device."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a list of strings")
        enc = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.config["max_length"], return_tensors="pt")
        return enc.input_ids.to(self.device), enc.attention_mask.to(self.device)

    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Cond:
        """Conditioning from token ids (with gradients when the caller wants them: pretraining)."""
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return {"prompt_embeds": hidden.float(), "prompt_mask": attention_mask.float()}

    @property
    def guidance_scale(self) -> float:
        return float(self.config["guidance_scale"])

    @property
    def do_cfg(self) -> bool:
        return self.guidance_scale > 1.0

    def encode(self, prompts: list[str], conditions: list[Image.Image] | None = None) -> Cond:
        """Text conditioning for a batch of prompts (no gradients; the text encoder is frozen in RPO).
        With guidance it also holds the empty prompt's, per row: ``uncond_embeds``, ``uncond_mask``."""
        if conditions is not None:
            raise ValueError("the toy policy is text-to-image: conditions must be None")
        ids, mask = self.tokenize(prompts)
        with torch.no_grad():
            cond = self.encode_tokens(ids, mask)
            if self.do_cfg:
                empty = self.encode_tokens(*self.tokenize([""]))
                cond["uncond_embeds"] = empty["prompt_embeds"].expand(len(prompts), -1, -1).contiguous()
                cond["uncond_mask"] = empty["prompt_mask"].expand(len(prompts), -1).contiguous()
            return cond

    def initial_latents(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(batch, 3, s, s) standard normal noise at σ = 1, fp32, drawn on the generator's device."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        s = self.config["image_size"]
        noise = torch.randn((batch, 3, s, s), generator=generator, device=generator.device,
                            dtype=torch.float32)
        return noise.to(self.device)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """(num_steps + 1,) fp32 levels linspace(1, 0) warped by the static shift s:
        σ' = s·σ / (1 + (s − 1)·σ) (SD3's shift; s = 1 leaves them uniform)."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        s = float(self.config["shift"])
        sig = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float32)
        return s * sig / (1.0 + (s - 1.0) * sig)

    def predict_x0(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The network's clean-image estimate x̂₀ at noise level ``sigma`` (scalar or (b,)); fp32."""
        b = latents.shape[0]
        sigma = _batch_sigma(sigma, latents)
        emb, mask = cond["prompt_embeds"], cond["prompt_mask"]
        if emb.shape[0] != b:
            raise ValueError(f"cond has batch {emb.shape[0]} but latents have batch {b}")
        out = self.transformer(latents, encoder_hidden_states=emb, encoder_attention_mask=mask,
                               timestep=sigma * 1000.0, added_cond_kwargs=_NO_EXTRA_COND,
                               return_dict=False)[0]
        return out.float()

    def guided_x0(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """x̂₀ with classifier-free guidance: x̂₀(∅) + s·(x̂₀(text) − x̂₀(∅)), the two branches in one
        batch (as diffusers' pipelines do); plain ``predict_x0`` when the scale is 1. Guiding x̂₀ is
        guiding v: the velocity is affine in x̂₀."""
        if not self.do_cfg:
            return self.predict_x0(latents, sigma, cond)
        if "uncond_embeds" not in cond:
            raise ValueError("ToyPolicy: guidance_scale > 1 needs cond['uncond_embeds'] (encode with the "
                             "same policy)")
        sig = _batch_sigma(sigma, latents)
        both = {"prompt_embeds": torch.cat([cond["prompt_embeds"], cond["uncond_embeds"]]),
                "prompt_mask": torch.cat([cond["prompt_mask"], cond["uncond_mask"]])}
        text, uncond = self.predict_x0(torch.cat([latents, latents]), torch.cat([sig, sig]), both).chunk(2)
        return uncond + self.guidance_scale * (text - uncond)

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """v ≈ ε − x₀ at noise level ``sigma`` (scalar or (b,)); fp32, same shape as ``latents``.

        x-prediction: v = (x_σ − x̂₀) / max(σ, σ_min), exact for σ ≥ σ_min (every σ of a schedule of
        up to 1/σ_min steps), so the last Euler step to σ = 0 lands on x̂₀. x̂₀ is guided when
        ``guidance_scale`` > 1 (``guided_x0``).
        """
        x0 = self.guided_x0(latents, sigma, cond)
        sig = _batch_sigma(sigma, latents)
        denom = sig.clamp_min(float(self.config["sigma_min"])).view(-1, *([1] * (latents.ndim - 1)))
        return (latents.float() - x0) / denom

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """(b, 3, s, s) pixels in [−1, 1] → RGB images upsampled (bicubic) to ``decode_size``."""
        if latents.ndim != 4 or latents.shape[1] != 3:
            raise ValueError(f"latents must be (b, 3, h, w), got {tuple(latents.shape)}")
        arr = ((latents.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        arr = arr.permute(0, 2, 3, 1).cpu().numpy()
        size = int(self.config["decode_size"])
        images = [Image.fromarray(a, "RGB") for a in arr]
        if size != arr.shape[1]:
            images = [im.resize((size, size), Image.Resampling.BICUBIC) for im in images]
        return images

    def describe(self) -> dict[str, Any]:
        n_params = sum(p.numel() for p in self.transformer.parameters())
        n_text = sum(p.numel() for p in self.text_encoder.parameters())
        keys = ("image_size", "patch_size", "width", "layers", "max_length", "decode_size", "shift",
                "guidance_scale")
        out: dict[str, Any] = {"class": "ToyPolicy", "transformer": "PixArtTransformer2DModel",
                               "text_encoder": "CLIPTextModel", "transformer_params": int(n_params),
                               "text_params": int(n_text), "source": self.source}
        out.update({k: self.config[k] for k in keys})
        if "pretrain" in self.config:
            out["pretrain"] = self.config["pretrain"]
        return out


def _batch_sigma(sigma: torch.Tensor | float, latents: torch.Tensor) -> torch.Tensor:
    """σ as a (b,) fp32 tensor on the latents' device: a scalar is broadcast, a (b,) tensor checked."""
    b = latents.shape[0]
    sig = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device)
    if sig.ndim == 0:
        sig = sig.expand(b)
    if sig.shape != (b,):
        raise ValueError(f"sigma must be a scalar or have shape ({b},), got {tuple(sig.shape)}")
    return sig


def images_to_latents(images: list[Image.Image], size: int) -> torch.Tensor:
    """RGB images → (b, 3, size, size) fp32 in [−1, 1] (box-resampled when the size differs)."""
    import numpy as np

    arrs = []
    for im in images:
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BOX)
        arrs.append(np.asarray(im.convert("RGB"), dtype=np.float32))
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
    return x / 127.5 - 1.0
