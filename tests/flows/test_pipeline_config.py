"""The pipeline config: typed stage sections, locations without defaults, cross-field checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from arr_core.errors import InputError
from flows.config import (
    ReinductionConfig,
    demo_config,
    load_pipeline_config,
    pipeline_config_from_dict,
)

ROOT = Path(__file__).resolve().parents[2]


def test_demo_yaml_is_the_embedded_default() -> None:
    assert load_pipeline_config(ROOT / "configs" / "pipeline_demo.yaml") == demo_config()


def test_data_location_has_no_default() -> None:
    raw = demo_config().model_dump(mode="json")
    raw["data"] = {}
    with pytest.raises(InputError, match="exactly one of data.pairs"):
        pipeline_config_from_dict(raw)


def test_induction_uses_the_pipeline_vlm_unless_set() -> None:
    cfg = demo_config(**{"vlm.seed": 7})
    assert cfg.induce.generator.seed == 7
    own = demo_config(**{"vlm.seed": 7, "induce.generator": {"backend": "scene", "seed": 3}})
    assert own.induce.generator.seed == 3


def test_training_rubrics_come_from_the_pipeline() -> None:
    with pytest.raises(InputError, match="reward.rubrics must be empty"):
        demo_config(**{"training.config.reward.rubrics": "rs-abc"})


def test_digest_ignores_the_api_key() -> None:
    a = demo_config(**{"vlm.api_key": "sk-one"})
    b = demo_config(**{"vlm.api_key": "sk-two"})
    assert a.digest() == b.digest() != demo_config(**{"induce.max_rubrics": 3}).digest()


def test_relative_paths_resolve_against_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cfg").mkdir()
    f = tmp_path / "cfg" / "r.yaml"
    f.write_text("data: {pairs: ../pairs.json}\nparent: latest\n")
    monkeypatch.chdir(ROOT)
    cfg = load_pipeline_config(f, ReinductionConfig)
    assert cfg.data.pairs == (tmp_path / "pairs.json").resolve()


def test_unknown_field_names_the_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("data: {world: {n: 8}}\ntraining: {config: {policy: {kind: toy}, prompts: {source: world}}}\n"
                 "judge: {oder: swap}\n")
    with pytest.raises(InputError, match=r"p.yaml, field 'judge.oder'"):
        load_pipeline_config(f)


def test_stored_parameters_take_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect stores flow-run parameters with secrets masked; a retried run reads them back."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    cfg = demo_config(**{"vlm": {"backend": "openai", "model": "m", "api_key": "sk-in-yaml"}})
    stored = cfg.model_dump(mode="json")
    assert stored["vlm"]["api_key"] == "**********"
    again = pipeline_config_from_dict(stored)
    assert again.vlm.api_key.get_secret_value() == "sk-from-env"
    assert again.induce.generator.api_key.get_secret_value() == "sk-from-env"
