"""The tiny component builders: in-memory tokenizers, eval mode, seeding, pipeline folders."""

from __future__ import annotations

import json

import pytest
import torch

from arr_core.rpo.adapters import tiny


def test_byte_level_alphabet_covers_every_byte_once():
    alphabet = tiny._byte_level_alphabet()
    assert len(alphabet) == len(set(alphabet)) == 256
    assert "a" in alphabet and " " not in alphabet  # the space byte is remapped (to "Ġ")
    assert "Ġ" in alphabet


def test_clip_tokenizer_is_char_level_and_pads_to_77():
    tok = tiny.tiny_clip_tokenizer()
    ids = tok("ab c", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id
    # "ab" → a, b</w>; "c" → c</w>; then end-of-text padding.
    assert tok.convert_ids_to_tokens(ids[1:4]) == ["a", "b</w>", "c</w>"]
    assert ids[4] == tok.eos_token_id and set(ids[4:]) == {tok.pad_token_id}


def test_t5_tokenizer_ends_with_eos():
    tok = tiny.tiny_t5_tokenizer()
    ids = tok("a b").input_ids
    assert ids[-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0
    assert tok.unk_token_id not in ids


def test_qwen_tokenizer_keeps_special_tokens_whole():
    tok = tiny.tiny_qwen_tokenizer()
    ids = tok("<|im_start|>hi<|image_pad|>").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["<|im_start|>", "h", "i", "<|image_pad|>"]
    assert len(tok) == 256 + len(tiny.QWEN_SPECIAL_TOKENS)


@pytest.mark.parametrize(
    "builder", [tiny.tiny_flux_components, tiny.tiny_sd3_components, tiny.tiny_qwen_edit_components]
)
def test_builders_are_eval_seeded_and_leave_global_rng_alone(builder):
    state = torch.random.get_rng_state()
    first = builder(seed=0)
    assert torch.equal(state, torch.random.get_rng_state())
    modules = {k: v for k, v in first.items() if isinstance(v, torch.nn.Module)}
    assert modules and all(not m.training for m in modules.values())
    assert all(not sub.training for m in modules.values() for sub in m.modules())
    again, other = builder(seed=0), builder(seed=1)
    for key in modules:
        same = again[key].state_dict()
        assert all(torch.equal(v, same[k]) for k, v in first[key].state_dict().items()), key
    transformer = lambda comps: torch.cat([p.flatten() for p in comps["transformer"].parameters()])  # noqa: E731
    assert not torch.equal(transformer(first), transformer(other))


def test_save_tiny_pipeline_writes_loadable_folders(tmp_path):
    folder = tiny.save_tiny_pipeline("qwen_edit", tmp_path / "q")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "QwenImageEditPlusPipeline"
    assert (folder / "processor" / "preprocessor_config.json").is_file()
    with pytest.raises(ValueError, match="kind='sdxl'"):
        tiny.save_tiny_pipeline("sdxl", tmp_path / "x")
