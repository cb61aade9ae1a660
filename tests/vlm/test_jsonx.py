"""JSON extraction from fenced and chatty answers, and the usable/unusable verdict used for re-asks."""

from __future__ import annotations

from arr_core.vlm.jsonx import check_answer, extract_json


def test_plain_fenced_and_chatty_answers():
    assert extract_json('{"rank": [1, 2], "reason": "x"}') == {"rank": [1, 2], "reason": "x"}
    fenced = 'Sure!\n```json\n{"rank": [2, 1], "reason": "blur"}\n```\nHope that helps.'
    assert extract_json(fenced) == {"rank": [2, 1], "reason": "blur"}
    chatty = 'I think {"rank": [1, 2], "reason": "has {braces} inside"} is my answer.'
    assert extract_json(chatty)["reason"] == "has {braces} inside"
    assert extract_json("no json here") is None
    assert extract_json("") is None
    assert extract_json("[1, 2]") is None  # a list is not an answer object


def test_prefers_the_object_with_the_required_keys():
    text = 'Example: {"a": 1}. Answer: {"rank": [1, 2], "reason": "r"}'
    assert extract_json(text, ("rank", "reason")) == {"rank": [1, 2], "reason": "r"}
    assert extract_json(text) == {"a": 1}


def test_check_answer_says_what_was_wrong():
    ok, problem = check_answer('{"rank": [1, 2], "reason": "r"}', ("rank", "reason"))
    assert ok is not None and problem is None
    assert check_answer("nothing", ("rank",))[1] == "the answer contained no JSON object"
    assert "'reason'" in check_answer('{"rank": [1, 2]}', ("rank", "reason"))[1]
    bad, problem = check_answer('{"rank": [1, 1], "reason": "r"}', ("rank",),
                                lambda o: "ties" if len(set(o["rank"])) < 2 else None)
    assert bad is None and problem == "ties"
    # a validator that trips over an odd type is reported, not raised
    _, problem = check_answer('{"rank": 5}', ("rank",), lambda o: "x" if len(o["rank"]) else None)
    assert "unexpected shape" in problem


def test_reasoning_is_never_parsed_as_the_answer():
    from arr_core.vlm.jsonx import strip_reasoning

    draft, answer = '{"rank": [2, 1], "reason": "draft"}', '{"rank": [1, 2], "reason": "final"}'
    # a closed block, a lone closing tag (the opening one was in the prompt), an unclosed block
    assert extract_json(strip_reasoning(f"<think>maybe {draft}</think>\n\n{answer}")) == {"rank": [1, 2], "reason": "final"}
    assert extract_json(strip_reasoning(f"maybe {draft} ... </think>\n{answer}"))["reason"] == "final"
    assert strip_reasoning(f"<think>\nmaybe {draft} and then I ran out of") == ""
    assert strip_reasoning(f"<THINK>{draft}</THINK>{answer}") == answer
    assert strip_reasoning(answer) == answer
    # check_answer strips before parsing: a draft inside reasoning is no answer at all
    assert check_answer(f"<think>{draft}", ("rank", "reason"))[1] == "the answer contained no JSON object"
    assert check_answer(f"<think>{draft}</think>{answer}", ("rank", "reason"))[0]["reason"] == "final"
