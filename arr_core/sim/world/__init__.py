"""The scene world: a synthetic compositional world for offline tests and demos (DESIGN.md,
"The scene world and the offline VLM"). Its accuracies say nothing about real images or VLMs."""

from arr_core.sim.world.check import check_spec, geneval_score
from arr_core.sim.world.detect import Detection, analyse_image, detect, image_quality, scene_detections
from arr_core.sim.world.edit import (
    EDIT_DEFECTS,
    EDIT_KINDS,
    EditTask,
    apply_edit_defects,
    check_edit,
    edit_utility,
    instruction_vocabulary,
    label_edit_pair,
    parse_instruction,
    sample_edit,
)
from arr_core.sim.world.grammar import (
    BACKGROUND,
    COLORS,
    RELATIONS,
    SHAPES,
    TAGS,
    PromptSpec,
    parse_prompt,
    prompt_vocabulary,
    sample_spec,
)
from arr_core.sim.world.pairs import make_pairs, make_prompts
from arr_core.sim.world.render import render
from arr_core.sim.world.scene import (
    DEFECTS,
    Scene,
    SceneObject,
    applicable_defects,
    apply_defects,
    relative_position,
    scene_from_spec,
)
from arr_core.sim.world.utility import label_pair, utility

__all__ = [
    "BACKGROUND", "COLORS", "DEFECTS", "EDIT_DEFECTS", "EDIT_KINDS", "RELATIONS", "SHAPES", "TAGS",
    "Detection", "EditTask", "PromptSpec", "Scene", "SceneObject",
    "analyse_image", "applicable_defects", "apply_defects", "apply_edit_defects", "check_edit", "check_spec", "detect",
    "edit_utility", "geneval_score", "image_quality", "instruction_vocabulary", "label_edit_pair",
    "label_pair", "make_pairs", "make_prompts", "parse_instruction", "parse_prompt", "prompt_vocabulary",
    "relative_position", "render", "scene_detections", "sample_edit", "sample_spec", "scene_from_spec", "utility",
]
