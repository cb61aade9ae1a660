"""Each protocol on small fixtures in its benchmark's published layout, judged by the offline scene VLM;
missing inputs are named errors; failed requests are counted, never scored."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from arr_core.bench.protocols import ProtocolInputs, run_protocol
from arr_core.errors import EndpointError, InputError
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.vlm.base import VLMTransportError
from arr_core.vlm.client import VLMClient

from . import protocol_fixtures as fx


def _scene() -> VLMClient:
    return VLMClient(SceneVLM(), cache_mode="off")


def _run(name: str, inputs: ProtocolInputs, client: VLMClient | None = None):
    res = run_protocol(name, client or _scene(), inputs, judge_name="scene", simulated=True, n_boot=100)
    assert res.kind == name  # stored under the benchmark's own kind, apart from the project's checkpoints/edit
    return res


@pytest.mark.parametrize("parquet", [False, True])
def test_gedit_scores_a_made_edit_above_an_unmade_one(tmp_path: Path, parquet: bool) -> None:
    g = fx.gedit(tmp_path, parquet=parquet)
    res = _run("gedit", ProtocolInputs(g["meta"], g["images"]))
    items = {it["key"]: it for it in res.details["items"]}
    assert items["k0"]["SC"] == 10 and items["k2"]["SC"] == 10  # made edits; k2's source from the bytes (Parquet)
    assert items["k1"]["SC"] == 0 and items["k1"]["O"] == 0  # the output is the source: nothing edited
    assert all(it["PQ"] == 10 for it in items.values())  # clean renders
    # overall = mean over groups of the per-sample sqrt(SC * PQ); one sample per group here
    want = sum(math.sqrt(it["SC"] * it["PQ"]) for it in items.values()) / 3
    assert res.summary["gedit/en/all/O"] == pytest.approx(want)
    assert res.summary["gedit/en/intersection/O"] == 10  # only k2 is flagged Intersection_exist
    assert res.config["protocol_version"] == "gedit-viescore-v1"
    assert res.summary["vlm_calls"] == 6  # one SC and one PQ request per sample


def test_gedit_missing_images_name_file_record_and_field(tmp_path: Path) -> None:
    g = fx.gedit(tmp_path)
    (g["images"] / "fullset" / "subject-add" / "en" / "k1.png").unlink()
    with pytest.raises(InputError) as e:
        _run("gedit", ProtocolInputs(g["meta"], g["images"]))
    assert e.value.file == str(g["meta"]) and e.value.record == 1 and e.value.field == "edited image"
    assert "fullset/subject-add/en/k1.png" in str(e.value)
    g = fx.gedit(tmp_path / "nosrc")  # JSONL carries no image bytes: the source must be a file
    (g["images"] / "fullset" / "subject-remove" / "en" / "k2_SRCIMG.png").unlink()
    with pytest.raises(InputError) as e:
        _run("gedit", ProtocolInputs(g["meta"], g["images"]))
    assert e.value.record == 2 and e.value.field == "input_image"


def test_imgedit_per_type_prompts_scores_and_errors(tmp_path: Path) -> None:
    f = fx.imgedit(tmp_path)
    res = _run("imgedit", ProtocolInputs(f["edits"], f["edited"], sources=f["origin"], judge_prompts=f["prompts"]))
    items = {it["key"]: it for it in res.details["items"]}
    assert items["2"]["score"] == 1 and all(items[k]["score"] == 5 for k in ("1", "3", "4"))
    assert items["1"]["scores"] == {"Prompt Compliance": 5, "Visual Naturalness": 5, "Physical & Detail Integrity": 5}
    assert res.summary["imgedit/overall"] == pytest.approx((5 + 1 + 5 + 5) / 4)
    # the judge-prompt file is found next to the edit file when not given
    again = _run("imgedit", ProtocolInputs(f["edits"], f["edited"], sources=f["origin"]))
    assert again.summary["imgedit/overall"] == res.summary["imgedit/overall"]
    (f["origin"] / "cat1" / "000001.jpg").unlink()
    with pytest.raises(InputError) as e:
        _run("imgedit", ProtocolInputs(f["edits"], f["edited"], sources=f["origin"]))
    assert e.value.record == "2" and e.value.field == "id" and "cat1/000001.jpg" in str(e.value)
    with pytest.raises(InputError, match="--sources"):
        _run("imgedit", ProtocolInputs(f["edits"], f["edited"]))


def test_dpg_masks_children_of_failed_questions(tmp_path: Path) -> None:
    d = fx.dpg(tmp_path)
    res = _run("dpg", ProtocolInputs(d["csv"], d["images"]))
    items = {it["item_id"]: it["score"] for it in res.details["items"]}
    assert items == {"a1": 0.5, "b2": 1.0}  # a1: the blue-square child is masked by its failed parent
    assert res.summary["dpg/score"] == pytest.approx(75.0)
    (d["images"] / "b2.png").unlink()
    with pytest.raises(InputError) as e:
        _run("dpg", ProtocolInputs(d["csv"], d["images"]))
    assert e.value.record == "b2" and e.value.field == "generated image"


def test_dpg_grid_scores_each_crop(tmp_path: Path) -> None:
    d = fx.dpg(tmp_path, grid=True)  # three tiles with the scene, the fourth empty
    res = _run("dpg", ProtocolInputs(d["csv"], d["images"], options={"pic_num": 4}))
    items = {it["item_id"]: it["score"] for it in res.details["items"]}
    assert items == {"a1": pytest.approx(3 * 0.5 / 4), "b2": pytest.approx(3 / 4)}
    assert res.summary["dpg/L1/entity"] == 0  # the official tally reads the last crop (the empty tile)


def test_tiif_and_unigenbench_official_layouts(tmp_path: Path) -> None:
    t = fx.tiif(tmp_path / "tiif")
    res = _run("tiif", ProtocolInputs(t["root"], t["images"]))
    assert res.summary["tiif/short/Basic Attribute"] == 0.5  # 2 of 4 shape+color answers as expected
    assert res.summary["tiif/short/Basic Relation"] == 1.0
    assert res.summary["tiif/short/overall"] == 0.75
    (t["images"] / "2d_spatial_relation" / "my-model" / "short_description" / "0.png").unlink()
    with pytest.raises(InputError) as e:
        _run("tiif", ProtocolInputs(t["root"], t["images"]))
    assert e.value.file == "2d_spatial_relation_prompts.jsonl" and e.value.record == 1

    u = fx.unigenbench(tmp_path / "ugb")
    res = _run("unigenbench", ProtocolInputs(u["csv"], u["images"], options={"images_per_prompt": 2}))
    scores = [it["score"] for it in res.details["items"]]
    assert scores[0][:2] == [1, 0] and scores[2][0] == 1  # red circle yes, "two circles" no; layout yes
    assert res.summary["unigenbench/en/Attribute"] == 0.5
    with pytest.raises(InputError) as e:  # the official layout has 4 images per prompt by default
        _run("unigenbench", ProtocolInputs(u["csv"], u["images"]))
    assert e.value.record == 1 and "0_2.png" in str(e.value)


class _Flaky(SceneVLM):
    """The scene VLM behind a transport that fails every request whose text contains ``fail_on`` (or,
    with ``garbage``, answers it with text that holds no JSON)."""

    def __init__(self, fail_on: str, garbage: bool = False) -> None:
        super().__init__()
        self.fail_on, self.garbage = fail_on, garbage

    async def chat(self, messages, **kw):
        if self.fail_on in str(messages):
            if self.garbage:
                return "Prompt Compliance: great", {}
            raise VLMTransportError("connection refused (test)")
        return await super().chat(messages, **kw)


def test_failures_are_counted_and_never_scored(tmp_path: Path) -> None:
    f = fx.imgedit(tmp_path)
    inputs = ProtocolInputs(f["edits"], f["edited"], sources=f["origin"], max_failure_rate=0.3)
    instruction = next(it for it in fx.edits(4, seed=9))[0]  # key "1"
    res = _run("imgedit", inputs, VLMClient(_Flaky(instruction), cache_mode="off", max_reasks=0))
    assert res.summary["transport_failures"] == 1 and res.summary["items"] == 3
    assert res.summary["imgedit/overall"] == pytest.approx((1 + 5 + 5) / 3)  # key 1 left out, not a 0
    assert "adjust" not in {k.split("/")[1] for k in res.summary if k.startswith("imgedit/")}
    res = _run("imgedit", inputs, VLMClient(_Flaky(instruction, garbage=True), cache_mode="off", max_reasks=1))
    assert res.summary["abstained"] == 1 and res.summary["transport_failures"] == 0
    assert res.summary["imgedit/overall"] == pytest.approx((1 + 5 + 5) / 3)
    with pytest.raises(EndpointError, match="imgedit: VLM endpoint"):
        _run("imgedit", inputs, VLMClient(_Flaky("data rater"), cache_mode="off", max_reasks=0))


def test_requests_are_built_per_chunk_and_a_dead_endpoint_stops_early() -> None:
    from arr_core.bench.protocols import base, tiif

    built = []

    def make(k: int):
        built.append(k)
        return tiif.request([f"Is there a red circle in the image? ({k})"], fx.render(fx.RED_CIRCLE, 32))

    with pytest.raises(EndpointError, match="the first 8 items all failed"):
        base.ask(VLMClient(_Flaky("red circle"), cache_mode="off", max_reasks=0),
                 [lambda k=k: make(k) for k in range(20)], "tiif", chunk=8)
    assert built == list(range(8))  # the later chunks were never built nor sent
    resps, counter = base.ask(_scene(), [lambda k=k: make(k) for k in range(5)], "tiif", chunk=2)
    assert len(resps) == 5 and counter.failed == 0 and all(r.parsed for r in resps)
