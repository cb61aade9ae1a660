"""UniGenBench / UniGenBench++ (Wang et al., 2025) with its per-checkpoint VLM protocol.

Source: CodeGoat24/UniGenBench @ 49d0bce, ``eval/src/eval_common.py`` (CC BY 4.0, Copyright (C) 2025
Tencent; the checkpoint explanations and prompt templates below are copied from it unchanged):

- request (``build_system_prompt`` lines 201-225, ``call_evaluation_gemini`` lines 292-309): the
  language's template (``SYSTEM_PROMPT_EN_TEMPLATE`` line 112 / ``SYSTEM_PROMPT_ZH_TEMPLATE`` line 136)
  filled with the prompt, the list of testpoints, their definitions (``EXPLANATION_DICT_EN`` line 30 /
  ``EXPLANATION_DICT_ZH`` line 68) and their per-prompt descriptions; one user message, text then image;
- answer (``parse_evaluation_response`` lines 228-258): ``<analysis>[…]</analysis>`` and
  ``<score>[0/1, …]</score>``, one entry per checkpoint; otherwise retried, finally left without scores;
- images (line 552): ``<data_path>/<index>_<j>.png`` for j < images_per_prompt (4);
- scores (``calculate_scores`` lines 381-452): checkpoint accuracy pooled over all images, per primary
  dimension (the checkpoint name before "-") and per sub-dimension; rows without scores are skipped.
  The script prints no overall; the overall here is the mean over primary dimensions (labelled so).

Differences: the configured VLM at temperature 0 (official: Gemini 2.5 Pro, or the released
UniGenBench-EvalModel on vLLM); after the image one paragraph asks for the ``analysis`` and ``score`` lists
as one JSON object instead of the XML tags; an image without a usable answer abstains.
"""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path
from typing import Any

from arr_core.bench.protocols import base
from arr_core.errors import InputError

NAME = "unigenbench"
VERSION = "unigenbench-vlm-v1"
DIFFERENCES = ("Official judge Gemini 2.5 Pro (or UniGenBench-EvalModel); here the configured VLM at temperature 0. "
               "The official prompt is sent verbatim; one paragraph after the image asks for its analysis and "
               "score lists as one JSON object instead of <analysis>/<score> tags. The overall is the mean over "
               "primary dimensions (the official script prints per-dimension accuracies only).")

# --- from CodeGoat24/UniGenBench eval/src/eval_common.py (CC BY 4.0), unchanged
EXPLANATION_DICT_EN = {
    'Relationship - Comparison': 'Comparison of attributes between two entities',
    'Relationship - Composition': 'An entity is composed of one or more other entities',
    'Relationship - Inclusion': 'A container contains an entity; the container can also be a plane, e.g., a snake in a painting on a wall',
    'Relationship - Similarity': 'Existence of similarities between different entities',
    'Compound - Imagination': 'Things that are impossible in real life',
    'Compound - Feature Matching': 'Different entities possess different types of attribute features',
    'Attribute - Size': "Assessment of the subject's size, height, length, thickness, width, or tallness/shortness",
    'Attribute - Expression': 'Distinguishing expressions from facial actions; expressions must convey a clear emotion',
    'Attribute - Quantity': 'Focuses on the challenge of depicting three or more items accurately',
    'Attribute - Material': 'Evaluation of different material types and textures',
    'Attribute - Color': 'Assessment of different colors',
    'Attribute - Shape': 'Assessment of different shapes',
    'Entity Layout - Two-Dimensional Space': 'Arrangement and positioning of entities in two-dimensional space',
    'Entity Layout - Three-Dimensional Space': 'Arrangement and positioning of entities in three-dimensional space',
    'Action - Full-body (Character/Anthropomorphic)': 'Full-body actions by characters or anthropomorphized entities, such as running, diving, breakdancing, swinging, or hanging upside down',
    'Action - Hand (Character/Anthropomorphic)': 'Focuses on hand structure—checking if fingers are missing, broken, or distorted',
    'Action - Animal': 'Actions performed by animals',
    'Action - Contact Interaction': 'Physical interactions between entities',
    'Action - Non-contact Interaction': 'For example, two people making eye contact—testing if the model can accurately depict such interactions',
    'Action - State': 'A sustained state of an entity, typically expressed with a verb',
    'Grammar - Negation': "Tests the model's understanding of negation grammar",
    'Grammar - Pronoun Reference': 'Tests if the model can resolve ambiguous pronoun references correctly',
    'Grammar - Consistency': 'Evaluation of shared attributes among entities',
    'World Knowledge': 'Covers knowledge of celebrities, architecture, basic domain knowledge, and internet slang. Celebrities with modern copyright risk should be avoided',
    'Style': 'Art, painting, photography, design styles, and corresponding artist names',
    'Text Generation': 'The text content model needed to accurately generate without any omissions or extra words',
    'Logical Reasoning': 'Requires the model to deeply understand the intent and perform reasoning',
}

EXPLANATION_DICT_ZH = {
    '关系-比较关系': '两者的属性对比',
    '关系-构成关系': '一个实体由另一种或几种实体构成',
    '关系-包含关系': '容器对实体的包含关系，容器也可以是平面的，比如：墙上的画里有一只蛇',
    '关系-相似关系': '不同实体中存在的相似关系',
    '复合考点-想象力': '现实生活中不可能发生的事情',
    '复合考点-不同实体特征匹配': '不同实体拥有不同类的属性特征',
    '实体布局-三维空间': '对于三维空间实体的摆放布局',
    '实体布局-二维空间': '对于二维空间实体的摆放布局',
    '属性-大小': '对主体 大小/高低/长短/粗细/宽窄/高矮',
    '属性-表情': '区分表情和脸部动作，脸部动作组成表情，但表情是一定要体现出某种情绪的。',
    '属性-数量': '重点考察三个或三个以上的数字难点',
    '属性-材质': '考察不同材质',
    '属性-颜色': '考察不同颜色',
    '属性-形状': '考察不同形状',
    '动作-人物/拟人全身动作': '人物或拟人全身性的动作，比如奔跑、跳水、跳街舞、荡秋千、倒挂金钩等',
    '动作-人物/拟人手部动作': '针对手部结构的考点，考核手指是否有缺失、崩坏等问题',
    '动作-动物动作': '动物的动作',
    '动作-实体间有接触互动': '各种实体间的有接触互动',
    '动作-实体间无接触互动': '比如两个人对视，考核模型能否把对视关系画对',
    '动作-状态': '实体持续的状态，一般是一个动词。',
    '语法-否定': '考察模型对于否定语法的掌握程度',
    '语法-代词指代': '这里的代词通常是有一些迷惑性的，考察模型能否正确对应',
    '语法-统一性': '实体共同属性的考察',
    '世界知识': '名人、建筑、基础的领域知识、网络流行语。其中名人不要使用当代有版权风险的名人',
    '风格': '艺术、绘画、摄影、设计风格，及对应艺术家名称',
    '逻辑推理': '需要模型深入理解意图并进行一定的推理',
    '文本生成': '考察模型能否准确生成不同语言，字体和长、短文字',
}

SYSTEM_PROMPT_EN_TEMPLATE = 'You are a precise and objective English-language image description system. I will provide you with a prompt for image generation, as well as the corresponding generated image. You will be given a set of evaluation criteria (checkpoints) and their explanations that define the relevance between the prompt and the image. You must evaluate whether the generated image fulfills the requirements implied by each checkpoint in the prompt.\n\n            For each image, follow the steps below in order:\n\n            1. The prompt for the generated image is: 「{prompt}」. You are to analyze the image content in detail from the angles specified in {testpoint}. Detailed definitions of these checkpoints are provided here: {explanation}. The specific description of each checkpoint in the context of the prompt is: {test_explanation}. You must analyze whether the image meets the requirements for each checkpoint individually.\n\n            2. Based on the above analysis, determine whether the generated image satisfies each checkpoint in terms of its visual alignment with the prompt. If the image meets the requirements of a checkpoint, assign a score of 1 to that checkpoint; otherwise, assign a score of 0.\n\n            Constraints:\n            - Only describe content that is directly visible; do not interpret, speculate, or infer any background story.\n            - Focus solely on visually verifiable details.\n            - Omit any uncertain or ambiguous elements.\n            - Even if mentioned in the input, do not describe abstract entities, emotions, or speculative ideas.\n\n            Please strictly follow the output format below:\n\n            <description>\n                <prompt>{prompt}</prompt>\n                <checkpoint>{testpoint}</checkpoint>\n                <analysis>A list using square brackets `[]`, where each element is a string of detailed analysis corresponding to one checkpoint, as required in Step 1. **Ensure the list length matches the number of checkpoints**. Each element should be a string representing the analysis for that specific checkpoint.</analysis>\n                <score>A list using square brackets `[]`, where each element is a binary score (0 or 1) corresponding to a checkpoint, as required in Step 2. **Ensure the list length matches the number of checkpoints**. Each element should be either 0 or 1, indicating whether the checkpoint was satisfied.</score>\n            </description>\n            '

SYSTEM_PROMPT_ZH_TEMPLATE = '你是一个精确且客观的中文图像描述系统。我会给你一段生成图像的提示词，以及对应的生成图像，同时对于生成图像与提示词之间相关性的考点及对应说明，你需要逐个考点来判断生成的图像是否遵从了提示词中所包含的对应考点要求。\n\n        针对每张图像，你需要按照顺序完成如下的任务：\n        1. 这张生成图像对应的提示词为「{prompt}」，你需要根据{testpoint}中的这些角度逐个对图像内容进行更进一步的详细分析，考点的详细说明如下：{explanation}，各个考点在这条prompt中对应的描述说明如下：{test_explanation}, 你需要根据考点逐一判断生成图像是否满足了考点对应的要求\n        2. 综合上述回答，你需要逐个考点判断生成的图像在考点关注维度上是否符合输入的prompt，如果满足要求则该考点得分为1，否则为0\n\n        约束条件：\n        - 仅描述直接可见的内容；不要进行解读、推测或暗示背景故事。\n        - 专注于能够确定性陈述的视觉细节。\n        - 省略不确定或不清晰的细节。\n        - 即使输入中存在，也不要描述抽象实体、情感或推测。\n\n        请严格遵循以下输出格式：\n\n        <description>\n            <prompt>{prompt}</prompt>\n            <checkpoint>{testpoint}</checkpoint>\n            <analysis>按照步骤1对于给定考点进行逐项详细分析，格式为一个方括号列表，**确保列表的长度与考点的数量相等**，每个元素为一个字符串，表示对于对应考点的分析</analysis>\n            <score>按照步骤2逐个对考点进行打分，格式为一个方括号列表，**确保列表的长度与考点的数量相等**，每个元素为0或者1，表示对应考点是否完成</score>\n        </description>\n        '

LANGS = {
    "en": {"explanations": EXPLANATION_DICT_EN, "template": SYSTEM_PROMPT_EN_TEMPLATE, "prompt": "prompt_en",
           "subdims": "sub_dims_en", "testpoints": "Testpoints", "descriptions": "Testpoint Description",
           "header": "Checkpoints Defination", "desc_header": "Checkpoints Description"},
    "zh": {"explanations": EXPLANATION_DICT_ZH, "template": SYSTEM_PROMPT_ZH_TEMPLATE, "prompt": "prompt_zh",
           "subdims": "sub_dims_zh", "testpoints": "考点", "descriptions": "考点对应描述",
           "header": "考点说明", "desc_header": "考点描述说明"},
}


def build_prompt(prompt: str, testpoints: list[str], descriptions: list[str], lang: str) -> str:
    """``build_system_prompt``: the template with the checkpoint definitions and descriptions."""
    cfg = LANGS[lang]
    explanation = f"{cfg['header']}:\u300c" + "".join(f"\n{p}: {cfg['explanations'][p]}" for p in testpoints)
    explanation += "\n\u300d"
    test_explanation = f"{cfg['desc_header']}:\u300c" + "".join(
        f"\n{p}: {descriptions[i]}" for i, p in enumerate(testpoints)) + "\n\u300d"
    return cfg["template"].format(prompt=prompt, testpoint=testpoints, explanation=explanation,
                                  test_explanation=test_explanation)


def primary(checkpoint: str) -> str:
    """The primary dimension of a checkpoint (text before the first "-", stripped)."""
    return checkpoint.split("-", 1)[0].strip()


def aggregate(rows: list[tuple[list[str], list[int]]]) -> dict[str, Any]:
    """``calculate_scores`` for (checkpoints, 0/1 scores) rows: pooled accuracy per primary and per
    sub-dimension, the pooled accuracy over all checkpoints and the mean over primary dimensions."""
    prim: dict[str, list[int]] = {}
    sub: dict[str, list[int]] = {}
    for cps, scores in rows:
        for cp, s in zip(cps, scores, strict=True):
            prim.setdefault(primary(cp), []).append(int(s == 1))
            sub.setdefault(cp.strip(), []).append(int(s == 1))
    p = {k: sum(v) / len(v) for k, v in prim.items()}
    return {"primary": p, "sub": {k: sum(v) / len(v) for k, v in sub.items()},
            "overall": base.mean_or_nan(list(p.values())),
            "pooled": base.mean_or_nan([s for v in prim.values() for s in v])}


def parse_scores(obj: dict[str, Any], n: int) -> dict[str, Any] | None:
    score, analysis = obj.get("score"), obj.get("analysis")
    if not isinstance(score, list) or len(score) != n or not isinstance(analysis, list) or len(analysis) != n:
        return None
    vals = [base.as_number(s, 0, 1) for s in score]
    if any(v is None or v not in (0.0, 1.0) for v in vals):
        return None
    return {"score": [int(v) for v in vals], "analysis": [str(a) for a in analysis]}


def request(prompt: str, testpoints: list[str], descriptions: list[str], lang: str, image: Any):
    from arr_core.vlm.messages import image_data_url, image_part, text_part

    n = len(testpoints)
    schema = base.obj_schema({"analysis": {"type": "array", "items": {"type": "string"}, "minItems": n, "maxItems": n},
                              "score": base.int_list_schema(n, 0, 1)})
    parts = [text_part(build_prompt(prompt, testpoints, descriptions, lang)), image_part(image_data_url(image)),
             text_part(base.json_contract({"analysis": ["<analysis of checkpoint 1>", "..."], "score": [1, 0]}))]
    return base.make_request(parts, kind="unigenbench", version=VERSION, schema=schema, required=("score", "analysis"),
                             validator=lambda o: None if parse_scores(o, n) else
                             f'"analysis" and "score" must be lists of {n} entries; scores 0 or 1',
                             max_tokens=512 + 128 * n)


def load(path: Path, limit: int | None) -> tuple[str, list[dict[str, Any]]]:
    """The test CSV (``index, prompt_<lang>, sub_dims_<lang>``) → (lang, records); unknown checkpoints are
    refused as the official script does."""
    f = str(path)
    if not path.is_file():
        raise InputError("UniGenBench CSV not found", file=f)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        lang = "en" if "prompt_en" in header else "zh" if "prompt_zh" in header else None
        if lang is None:
            raise InputError(f"header must have 'prompt_en' or 'prompt_zh', got {header}", file=f, field="prompt_en")
        cfg = LANGS[lang]
        recs = []
        for n, row in enumerate(reader, 1):
            index = str(base.require(row, "index", file=f, record=n)).strip()
            try:
                dims = json.loads(base.require(row, cfg["subdims"], file=f, record=n))
            except json.JSONDecodeError as e:
                raise InputError(f"invalid JSON ({e.msg})", file=f, record=n, field=cfg["subdims"]) from None
            tps, descs = list(dims.get(cfg["testpoints"], [])), list(dims.get(cfg["descriptions"], []))
            if not tps or len(tps) != len(descs):
                raise InputError(f"{len(tps)} testpoints but {len(descs)} descriptions", file=f, record=n,
                                 field=cfg["subdims"])
            unknown = [t for t in tps if t not in cfg["explanations"]]
            if unknown:
                raise InputError(f"unknown checkpoint(s) {unknown}", file=f, record=n, field=cfg["testpoints"])
            recs.append({"index": index, "record": n, "prompt": base.require(row, cfg["prompt"], file=f, record=n),
                         "testpoints": tps, "descriptions": descs})
            if limit and len(recs) >= limit:
                break
    return lang, recs


def run(client: Any, inputs: base.ProtocolInputs, *, judge_name: str, simulated: bool = False,
        n_boot: int = 2000, seed: int = 0):
    lang, recs = load(inputs.prompts, inputs.limit)
    per_prompt = int(inputs.options.get("images_per_prompt") or 4)
    jobs = []
    for r in recs:
        for j in range(per_prompt):
            img = base.find_image(inputs.images, f"{r['index']}_{j}", file=str(inputs.prompts), record=r["record"],
                                  what="generated image")
            jobs.append((r, j, partial(request, r["prompt"], r["testpoints"], r["descriptions"], lang, str(img))))
    resps, counter = base.ask(client, [q for _, _, q in jobs], "unigenbench", max_failure_rate=inputs.max_failure_rate)
    rows, per_item, abstained = [], [], 0
    for (r, j, _), resp in zip(jobs, resps, strict=True):
        got = base.outcome(resp, lambda o, n=len(r["testpoints"]): parse_scores(o, n))
        if got.parsed is None:
            abstained += 1
            per_item.append({"index": r["index"], "image": j, "abstained": got.error})
            continue
        rows.append((r["testpoints"], got.parsed["score"]))
        per_item.append({"index": r["index"], "image": j, "score": got.parsed["score"]})
    agg = aggregate(rows)
    prim_rows = [[k, v] for k, v in sorted(agg["primary"].items())]
    prim_rows += [["overall (mean over primary dimensions)", agg["overall"]], ["all checkpoints pooled", agg["pooled"]]]
    tables = [(f"UniGenBench ({lang}) — primary dimensions", ["dimension", "accuracy"], prim_rows,
               "Checkpoint accuracy pooled over all images."),
              (f"UniGenBench ({lang}) — sub-dimensions", ["sub-dimension", "accuracy"],
               [[k, v] for k, v in sorted(agg["sub"].items())], "")]
    summary = {f"unigenbench/{lang}/overall": agg["overall"], f"unigenbench/{lang}/pooled": agg["pooled"],
               **{f"unigenbench/{lang}/{k}": v for k, v in agg["primary"].items()}}
    return base.build_result(NAME, VERSION, base.Summary(tables, summary, {"items": per_item}),
                             inputs=inputs, judge_name=judge_name, simulated=simulated, counter=counter,
                             abstained=abstained, items=len(rows), differences=DIFFERENCES, client=client)
