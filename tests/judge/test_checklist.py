"""The checklist judge: yes/no/n.a. per rubric for each image, scores → group rewards with ties."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image
from test_judge import FixedAnswers  # tests/judge is on sys.path (pytest prepend mode)

from arr_core.judge.checklist import ChecklistRewarder, checklist_rubrics, checklist_score
from arr_core.prompts.templates import PROMPT_VERSION, PROMPT_VERSIONS, build_checklist, verdicts_validator
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.sim.scene_vlm import SceneVLM, checklist_holds
from arr_core.sim.world.grammar import sample_spec
from arr_core.sim.world.render import render
from arr_core.sim.world.scene import apply_defects, scene_from_spec
from arr_core.vlm.client import VLMClient

RUBRICS = RubricSet.from_text(
    "Rubric 1:\nTheme: Faithfulness\n- Tip: The image satisfies every requirement of the caption at once.\n\n"
    "Rubric 2:\nTheme: Objects\n- Tip: Each object appears exactly the number of times the caption states.\n"
    "- Tip: Every object named in the caption is present in the image; none is missing.\n\n"
    "Rubric 3:\nTheme: Look\n- Tip: The picture has an overall appealing look.\n")
EMPTY = Image.new("RGB", (64, 64), (160, 160, 160))


def _renders(seed: int) -> tuple[str, Image.Image, Image.Image]:
    """A counting prompt, a clean 64 px render and one with the wrong count."""
    rng = np.random.default_rng(seed)
    spec = sample_spec(rng, "counting")
    clean = render(scene_from_spec(spec, rng), 64, seed=seed)
    wrong = render(apply_defects(scene_from_spec(spec, rng), spec, ["wrong_count"], rng), 64, seed=seed + 1)
    return spec.prompt, clean, wrong


def _client(backend=None) -> VLMClient:
    return VLMClient(backend or SceneVLM(seed=0), cache_mode="off")


# ---- pure pieces ---------------------------------------------------------------------------------

def test_checklist_score_shares_hard_gate_and_not_applicable():
    assert checklist_score(["yes", "no", "n/a", "yes"], [False] * 4) == pytest.approx(2 / 3)
    assert checklist_score(["n/a", "n/a"], [False, False]) is None
    hard = [True, False, False]
    assert checklist_score(["no", "yes", "yes"], hard) == 0.0  # a failed hard rubric: no credit
    assert checklist_score(["yes", "yes", "no"], hard) == 1.5
    assert checklist_score(["n/a", "yes", "yes"], hard) == 0.0  # the gate needs a "yes"; "n/a" is not one
    assert checklist_score(["yes", "n/a", "n/a"], hard) == 1.0
    assert checklist_score([" Yes", "NO.", "N/A"], hard) == 1.0  # common spellings are read
    two_hard = [True, True, False]
    assert checklist_score(["yes", "n/a", "yes"], two_hard) == 2.0  # "n/a" neither passes nor fails
    # hard_only: the other rubrics no longer order images that pass the gate
    assert checklist_score(["yes", "yes", "yes"], hard, hard_only=True) == 1.0
    assert checklist_score(["yes", "no", "no"], hard, hard_only=True) == 1.0
    assert checklist_score(["no", "yes", "yes"], hard, hard_only=True) == 0.0
    with pytest.raises(ValueError, match="2 verdicts for 3 rubrics"):
        checklist_score(["yes", "no"], hard)
    with pytest.raises(ValueError, match="maybe"):
        checklist_score(["yes", "maybe", "no"], hard)


def test_checklist_rubrics_flags_hard_themes_and_names_missing_ones():
    texts, hard = checklist_rubrics(RUBRICS, ["Faithfulness"])
    assert len(texts) == 4 and hard == [True, False, False, False]
    assert texts[0].startswith("The image satisfies every requirement")
    with pytest.raises(ValueError, match=r"\['Colour'\] not in rubric set .*'Faithfulness', 'Objects', 'Look'"):
        checklist_rubrics(RUBRICS, ["Colour"])
    flat = RubricSet(criteria=["Objects are sharp.", "Colours match."])
    assert checklist_rubrics(flat) == (["Objects are sharp.", "Colours match."], [False, False])
    with pytest.raises(ValueError, match="has no themes"):
        checklist_rubrics(flat, ["Objects"])


def test_checklist_template_contract_and_lineage():
    prompt, clean, _ = _renders(0)
    req = build_checklist("t2i", prompt, clean, rubrics=["Objects are\n  sharp.", "Colours match."])
    text = req.messages[0]["content"][-1]["text"]
    assert "Rubrics:\n1. Objects are sharp.\n2. Colours match.\n" in text and f"Caption: {prompt}" in text
    assert req.kind == "checklist" and req.prompt_version == PROMPT_VERSIONS["checklist"]
    assert req.validator({"verdicts": ["yes", "n/a"], "reason": ""}) is None
    assert "exactly 2 entries" in req.validator({"verdicts": ["yes"], "reason": ""})
    assert "verdicts[1]" in verdicts_validator(2)({"verdicts": ["yes", "maybe"], "reason": ""})
    with pytest.raises(ValueError, match="non-empty"):
        build_checklist("t2i", prompt, clean, rubrics=[])
    with pytest.raises(ValueError, match="source"):
        build_checklist("t2i", prompt, clean, rubrics=["x"], source=clean)
    # Rubric-set ids are digests over PROMPT_VERSION (its lineage): the checklist template is not part
    # of it (it judges with a rubric set, it does not make one). Issue 21's prompt changes bumped it.
    assert PROMPT_VERSION == "categorize-v1+check-v1+generate-v2+judge-v3+revise-v2"
    assert "checklist" not in PROMPT_VERSION


# ---- the offline VLM's verdicts ------------------------------------------------------------------

def test_scene_vlm_checklist_verdicts():
    prompt, clean, wrong = _renders(2)
    rubrics, _ = checklist_rubrics(RUBRICS)
    vlm = SceneVLM(seed=0)

    def verdicts(image, caption=prompt):
        import json

        return json.loads(vlm.respond(build_checklist("t2i", caption, image, rubrics=rubrics).messages)[0])["verdicts"]

    assert verdicts(clean) == ["yes", "yes", "yes", "n/a"]  # the vague rubric cannot be checked
    assert verdicts(wrong)[:2] == ["no", "no"]
    assert verdicts(EMPTY)[:3] == ["no", "no", "no"]
    assert verdicts(clean, "a photo of a zebra") == ["n/a"] * 4  # unknown caption: content unknowable
    assert checklist_holds("sharpness", 0.7) and not checklist_holds("sharpness", 0.69)
    assert checklist_holds("noise", 0.8) and not checklist_holds("noise", 0.79)
    assert checklist_holds("count", 1.0) and not checklist_holds("count", 0.5)


# ---- the rewarder --------------------------------------------------------------------------------

def test_checklist_rewarder_ranks_by_share_and_ties_equal_scores():
    prompt, clean, wrong = _renders(4)
    rewarder = ChecklistRewarder(_client(), RUBRICS, "t2i")
    a, b, c = asyncio.run(rewarder.score([prompt] * 3, [[wrong, clean, EMPTY], [clean, clean.copy()],
                                                        [wrong, EMPTY]]))
    assert a.outcome == "win" and a.rewards[1] == 1.0 and a.rewards[2] == -0.1 and a.ranks[1] == 1
    assert b.outcome == "tie" and b.rewards == [0.0, 0.0] and b.ranks is None
    # wrong count keeps presence (1 of 3), the empty image has nothing (0 of 3)
    assert c.outcome == "win" and c.rewards == [1.0, -0.1]
    assert rewarder.stats == {"images": 7, "unusable": 0, "not_applicable": 7, "abstained_groups": 0}


def test_hard_theme_ties_images_that_all_fail_it():
    prompt, clean, wrong = _renders(4)
    rewarder = ChecklistRewarder(_client(), RUBRICS, "t2i", hard_themes=["Faithfulness"])
    a, b = asyncio.run(rewarder.score([prompt] * 2, [[wrong, EMPTY], [wrong, clean, EMPTY]]))
    assert a.outcome == "tie" and a.rewards == [0.0, 0.0]  # both fail the hard rubric: no advantage
    assert b.outcome == "win" and b.rewards[1] == 1.0 and b.rewards[0] == b.rewards[2] == pytest.approx(0.175)


def test_hard_only_ties_images_that_pass_the_gate():
    """With hard_only, images that pass the hard rubric tie whatever the other rubrics say; without it
    the same group is ordered by them."""
    prompt, clean, wrong = _renders(4)
    answers = ['{"verdicts": ["yes", "yes", "yes", "yes"], "reason": "all"}',
               '{"verdicts": ["yes", "yes", "yes", "no"], "reason": "dull"}',
               '{"verdicts": ["no", "no", "yes", "yes"], "reason": "miscounted"}']
    outs = {}
    for only in (True, False):
        rewarder = ChecklistRewarder(VLMClient(FixedAnswers(answers), cache_mode="off"), RUBRICS, "t2i",
                                     hard_themes=["Faithfulness"], hard_only=only)
        [outs[only]] = asyncio.run(rewarder.score([prompt], [[clean, clean.copy(), wrong]]))
    assert outs[True].outcome == "win" and outs[True].rewards[0] == outs[True].rewards[1]  # both pass: tie
    assert outs[True].rewards[2] < outs[True].rewards[0]
    assert outs[False].rewards[0] > outs[False].rewards[1] > outs[False].rewards[2]
    with pytest.raises(ValueError, match="needs hard_themes"):
        ChecklistRewarder(_client(), RUBRICS, "t2i", hard_only=True)


@pytest.mark.parametrize("garbage", ["All fine.", '{"verdicts": ["yes"], "reason": "x"}',
                                     '{"verdicts": ["yes", "maybe", "no", "no"], "reason": "x"}'])
def test_unusable_answers_abstain_and_are_counted(garbage):
    prompt, clean, wrong = _renders(1)
    backend = FixedAnswers([garbage])
    rewarder = ChecklistRewarder(VLMClient(backend, cache_mode="off", max_reasks=1), RUBRICS, "t2i")
    [o] = asyncio.run(rewarder.score([prompt], [[clean, wrong]]))
    assert o.outcome == "abstain" and o.rewards == [0.0, 0.0] and o.ranks is None
    assert rewarder.stats["unusable"] == 2 and rewarder.stats["abstained_groups"] == 1
    assert backend.calls == 2 * 2  # images × (1 + max_reasks)


def test_checklist_rewarder_input_errors():
    prompt, clean, wrong = _renders(1)
    client = _client()
    with pytest.raises(ValueError, match="needs a rubric set"):
        ChecklistRewarder(client, None, "t2i")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is for task 't2i'"):
        ChecklistRewarder(client, RUBRICS, "edit")
    with pytest.raises(ValueError, match="no rubrics to check"):
        ChecklistRewarder(client, RubricSet(task="t2i"), "t2i")
    with pytest.raises(ValueError, match="not in rubric set"):
        ChecklistRewarder(client, RUBRICS, "t2i", hard_themes=["Nope"])
    rewarder = ChecklistRewarder(client, RUBRICS, "t2i")
    with pytest.raises(ValueError, match="G >= 2"):
        asyncio.run(rewarder.score([prompt], [[clean]]))
    with pytest.raises(ValueError, match="no source images"):
        asyncio.run(rewarder.score([prompt], [[clean, wrong]], [clean]))


def test_theme_without_tips_and_all_not_applicable_image_abstains():
    prompt, clean, wrong = _renders(5)
    bare = RubricSet.from_text("Rubric 1:\nTheme: Objects\n- Tip: All objects the caption asks for appear in the "
                               "image.\n\nRubric 2:\nTheme: Overall look\n")
    texts, hard = checklist_rubrics(bare, ["Overall look"])
    assert texts == ["All objects the caption asks for appear in the image.", "Overall look"]
    assert hard == [False, True]
    rewarder = ChecklistRewarder(_client(), RUBRICS, "t2i")
    [o] = asyncio.run(rewarder.score(["a photo of a zebra"], [[clean, wrong]]))  # every rubric "n/a"
    assert o.outcome == "abstain" and rewarder.stats["abstained_groups"] == 1 and rewarder.stats["unusable"] == 0


def test_checklist_rewarder_on_edits():
    from arr_core.sim.world.edit import sample_edit
    from arr_core.sim.world.render import render as draw

    rng = np.random.default_rng(7)
    task = sample_edit(rng, "recolour")
    src, done = draw(task.source, 64, seed=1), draw(task.target, 64, seed=2)
    rubrics = RubricSet.from_text("Rubric 1:\nTheme: Edit\n- Tip: The edit carries out exactly what the "
                                  "instruction asks for.\n", task="edit")
    rewarder = ChecklistRewarder(_client(), rubrics, "edit")
    [o] = asyncio.run(rewarder.score([task.instruction], [[src, done]], [src]))
    assert o.outcome == "win" and o.rewards == [-0.1, 1.0]  # the unedited copy does not follow the instruction
    with pytest.raises(ValueError, match="one source image per prompt"):
        asyncio.run(rewarder.score([task.instruction], [[src, done]]))
