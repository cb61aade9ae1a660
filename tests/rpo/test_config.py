"""TrainConfig: paper defaults, cross-field checks, YAML loading with env expansion and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from arr_core.errors import InputError
from arr_core.rpo.config import TrainConfig, load_train_config

ROOT = Path(__file__).resolve().parents[2]
MIN = {"policy": {"kind": "toy"}, "prompts": {"source": "world"}}


def test_paper_defaults() -> None:
    c = TrainConfig.model_validate(MIN)
    assert (c.lora.rank, c.lora.alpha, c.lr, c.weight_decay, c.num_steps, c.group_size, c.beta, c.grad_clip) == \
        (16, 32.0, 5e-5, 1e-4, 8, 2, 0.01, 1.0)
    assert c.clip_range == 0.2 and c.advantage == "centered" and c.noise == "flow_grpo" and c.a == 0.7
    assert c.trained_step_indices() == list(range(7))  # all but the last
    # The judge sees the clean estimate (ARR's code); kernels: never cuDNN attention; compile on CUDA only.
    assert (c.judged_image, c.attention_backend, c.compile, c.max_inflight_judge_batches) == \
        ("clean_estimate", "auto", "auto", 2)


@pytest.mark.parametrize("extra,match", [
    ({"lr_rate": 1.0}, "Extra inputs are not permitted"),
    ({"prompts_per_step": 3, "rollout_batch_size": 2}, "multiple of rollout_batch_size"),
    ({"trained_window": [3, 9]}, "0 <= start < end <= num_steps"),
    ({"trained_steps": "window"}, "Extra inputs are not permitted"),  # one field now: trained_window
    ({"noise_block": 4}, "Extra inputs are not permitted"),  # moved to experimental
    ({"experimental": {"noise_block": 4}, "policy": {"kind": "flux", "folder": "x"}},
     "experimental.noise_block 4 needs image-shaped latents"),
    ({"policy": {"kind": "flux"}}, "policy.folder is required"),
    ({"resolution": 64}, "resolution must be empty for the toy policy"),
    ({"reward": {"kind": "checker"}}, "Extra inputs are not permitted"),  # benchmark rewards are not config
    ({"reward": {"shuffled": True}}, "Extra inputs are not permitted"),
    ({"reward": {"vlm": {"backend": "openai", "model": "m", "api_key": "sk-x"}}}, "keep secrets out"),
    ({"reward": {"vlm": {"backend": "nope"}}}, "backend"),
    ({"reward": {"mode": "zzz"}}, "does not match any of the expected tags"),
    ({"reward": {"hard_themes": ["Faithfulness"]}}, "Extra inputs are not permitted"),  # a checklist field
    ({"reward": {"mode": "checklist", "hard_themes": [" "]}}, "theme names must be non-empty"),
    ({"reward": {"mode": "checklist"}, "experimental": {"hard_only": True}},
     "hard_only needs reward.mode: checklist and reward.hard_themes"),
    ({"experimental": {"hard_only": True}}, "hard_only needs reward.mode: checklist"),
    ({"reward": {"mode": "checklist", "mapping": "paper"}}, "Extra inputs are not permitted"),  # a rank field
    ({"noise": "ode"}, "noise"),
    ({"policy": {"kind": "flux", "folder": "/x", "guidance_scale": 3.0}}, "applies to kinds 'toy' and 'sd3'"),
    ({"policy": {"kind": "toy", "guidance_scale": 0.5}}, "greater than or equal to 1"),
    ({"judged_image": "deterministic_last_step", "trained_window": [0, 8]}, "trained_window must end before"),
    ({"judged_image": "noisy"}, "judged_image"),
    ({"attention_backend": "fast"}, "attention_backend"),
    ({"compile": "sometimes"}, "compile"),
    ({"max_inflight_judge_batches": -1}, "greater than or equal to 0"),
])
def test_cross_field_checks(extra: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        TrainConfig.model_validate({**MIN, **extra})


def test_reward_union_defaults_to_the_rank_judge() -> None:
    c = TrainConfig.model_validate(MIN)
    assert c.reward.mode == "rank" and c.reward.order == "swap" and c.reward.mapping is None
    c = TrainConfig.model_validate({**MIN, "reward": {"mode": "checklist", "hard_themes": ["A"]},
                                    "experimental": {"hard_only": True}})
    assert c.reward.mode == "checklist" and c.reward.hard_themes == ["A"] and c.experimental.hard_only
    assert TrainConfig.model_validate_json(c.model_dump_json()) == c  # round trip (exported to training hosts)


def test_trained_step_selection() -> None:
    c = TrainConfig.model_validate({**MIN, "trained_window": [2, 5]})
    assert c.trained_step_indices() == [2, 3, 4]
    assert c.sde_step_mask() == [True] * 8  # default 'all': Flow-GRPO's SDE on every step
    c = TrainConfig.model_validate({**MIN, "trained_window": [0, 2], "sde_steps": "trained"})
    assert c.sde_step_mask() == [True, True] + [False] * 6
    with pytest.raises(ValueError, match="sde_steps"):
        TrainConfig.model_validate({**MIN, "sde_steps": "some"})
    # Flow-GRPO's deterministic last step: an Euler step in the rollout itself.
    c = TrainConfig.model_validate({**MIN, "judged_image": "deterministic_last_step"})
    assert c.sde_step_mask() == [True] * 7 + [False] and c.trained_step_indices() == list(range(7))


def test_load_yaml_env_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("policy:\n  kind: flux\n  folder: ${FLUX_DIR}\nprompts:\n  source: file\n  path: ${P:-p.txt}\n")
    with pytest.raises(InputError, match="FLUX_DIR is not set") as e:
        load_train_config(f)
    assert e.value.field == "policy.folder"
    monkeypatch.setenv("FLUX_DIR", "/models/flux")
    c = load_train_config(f, overrides={"reward.rubrics": "rs-1"})
    assert str(c.policy.folder) == "/models/flux" and str(c.prompts.path) == "p.txt" and c.reward.rubrics == "rs-1"
    f.write_text("policy: {kind: toy}\nprompts: {source: world}\nbeta: -1\n")
    with pytest.raises(InputError, match="greater than or equal to 0") as e:
        load_train_config(f)
    assert e.value.field == "beta"
    f.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="top level must be a mapping"):
        load_train_config(f)
    with pytest.raises(InputError, match="not found"):
        load_train_config(tmp_path / "missing.yaml")


def test_shipped_configs_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FLUX_DEV_DIR", "ARR_TRAIN_PROMPTS", "ARR_VLM_BASE_URL", "QWEN_IMAGE_EDIT_DIR", "ARR_EDIT_PROMPTS"):
        monkeypatch.setenv(var, f"/tmp/{var.lower()}")
    toy = load_train_config(ROOT / "configs" / "train_toy.yaml")
    assert toy.policy.kind == "toy" and toy.reward.vlm == {"backend": "scene"}
    flux = load_train_config(ROOT / "configs" / "train_flux_qwen3vl.yaml")
    assert flux.reward.vlm["model"] == "Qwen/Qwen3-VL-8B-Instruct" and flux.distributed == "ddp"
    assert (flux.lora.rank, flux.lora.alpha, flux.lr, flux.beta, flux.num_steps, flux.resolution) == \
        (16, 32.0, 5e-5, 0.01, 8, 512)
    edit = load_train_config(ROOT / "configs" / "train_qwen_image_edit.yaml")
    assert (edit.lora.rank, edit.lora.alpha, edit.lr, edit.beta, edit.num_steps) == (32, 64.0, 1e-5, 0.02, 10)


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "vlm":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_reproduction_presets_load_and_docs_list_every_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    for var in ("FLUX_DEV_DIR", "ARR_TRAIN_PROMPTS", "ARR_VLM_BASE_URL", "QWEN_IMAGE_EDIT_DIR", "ARR_EDIT_PROMPTS"):
        monkeypatch.setenv(var, f"/tmp/{var.lower()}")
    flux = load_train_config(ROOT / "configs" / "reproduce" / "arr_flux.yaml")
    edit = load_train_config(ROOT / "configs" / "reproduce" / "arr_qwen_edit.yaml")
    # The released launchers' choices (scripts/finetune/*_rpo_8gpus.sh of ARR's code).
    for c in (flux, edit):
        assert (c.noise, c.eta, c.shared_initial_noise, c.advantage, c.clip_range, c.adv_clip, c.seed) == \
            ("dance_grpo", 0.3, True, "raw", 0.2, 5.0, 42)
        assert c.judged_image == "clean_estimate" and c.trained_step_indices() == list(range(c.num_steps - 1))
        assert (c.reward.mode, c.reward.order, c.reward.mapping, c.group_size) == ("rank", "single", "paper", 2)
        assert sorted(c.lora.targets or []) == ["to_k", "to_out.0", "to_q", "to_v"] and c.lora.dropout == 0.0
        assert c.policy.dtype == "float32" and c.bf16_autocast and c.gradient_checkpointing
    assert (flux.policy.kind, flux.lora.rank, flux.lora.alpha, flux.lr, flux.beta, flux.num_steps) == \
        ("flux", 16, 32.0, 5e-5, 0.01, 8)
    assert (edit.policy.kind, edit.lora.rank, edit.lora.alpha, edit.lr, edit.beta, edit.num_steps) == \
        ("qwen_edit", 32, 64.0, 1e-5, 0.02, 10)
    # 8 (flux) and 4 (edit) samples per optimizer step, as its gradient accumulation intends.
    assert flux.prompts_per_step * flux.group_size == 8 and edit.prompts_per_step * edit.group_size == 4
    assert flux.rollout_batch_size == edit.rollout_batch_size == 1 and flux.accumulate == edit.accumulate == "all"

    # docs/rpo.md's preset table names every field in which a preset differs from the defaults.
    doc = (ROOT / "docs" / "rpo.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Reproduction presets"):]
    section = section[:section.index("\n## ", 5)] if "\n## " in section[5:] else section
    listed = {m for row in section.splitlines() if row.startswith("| `")
              for m in re.findall(r"`([a-z0-9_.]+)`", row.split("|")[1])}
    for c in (flux, edit):
        default = TrainConfig.model_validate({"policy": {"kind": c.policy.kind, "folder": "/x"},
                                              "prompts": c.prompts.model_dump(), "reward": {"vlm": c.reward.vlm}})
        a, b = _flat(c.model_dump(mode="json")), _flat(default.model_dump(mode="json"))
        differ = {k for k in a if a[k] != b[k]} - {"policy.folder"}
        assert differ <= listed, sorted(differ - listed)
