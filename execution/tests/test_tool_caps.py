"""The model-input filter that caps every tool result the model is sent (execution.catalog)."""

from __future__ import annotations

import copy

from agents import Agent
from agents.run_config import CallModelData, ModelInputData
from django.test import override_settings

from execution.catalog import tool_output_text, tool_outputs_capped

CAP = 300
AGENT = Agent(name="a")


def filtered(items: list) -> list:
    data = CallModelData(model_data=ModelInputData(input=list(items), instructions="x"), agent=AGENT, context=None)
    return tool_outputs_capped(data).input


def text_of(output) -> str:
    parts = output if isinstance(output, list) else [output]
    return "".join(part.get("text", "") + part.get("stdout", "") + part.get("stderr", "") for part in parts)


@override_settings(HARNESS_TOOL_OUTPUT_MAX_CHARS=CAP)
def test_a_string_output_is_cut_with_the_marker_and_the_original_item_is_left_alone():
    item = {"type": "function_call_output", "call_id": "c1", "output": "x" * 1000}
    original = copy.deepcopy(item)
    [capped] = filtered([item])
    assert len(capped["output"]) <= CAP and capped["output"].endswith(
        "[truncated: 1000 characters, kept the first 245]"
    )
    assert capped["call_id"] == "c1" and item == original


@override_settings(HARNESS_TOOL_OUTPUT_MAX_CHARS=CAP)
def test_outputs_within_the_cap_and_other_items_are_the_same_objects():
    items = [
        {"role": "user", "content": "y" * 1000},
        {"type": "function_call", "call_id": "c1", "name": "t", "arguments": "z" * 1000},
        {"type": "function_call_output", "call_id": "c1", "output": "short"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "a" * CAP}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "w" * 1000}]},
    ]
    assert all(after is before for after, before in zip(filtered(items), items, strict=True))


@override_settings(HARNESS_TOOL_OUTPUT_MAX_CHARS=CAP)
def test_text_parts_share_the_cap_and_images_pass_whole():
    image = {"type": "input_image", "image_url": "data:image/png;base64," + "i" * 5000}
    output = [{"type": "input_text", "text": "a" * 200}, image, {"type": "input_text", "text": "b" * 200}]
    [capped] = filtered([{"type": "function_call_output", "call_id": "c", "output": output}])
    parts = capped["output"]
    assert parts[1] is image
    text = text_of(parts)
    assert len(text) <= CAP and text.startswith("a" * 200 + "b")
    assert "[truncated: 400 characters, kept the first" in text
    assert len(output[2]["text"]) == 200  # the tool's own parts are not changed


@override_settings(HARNESS_TOOL_OUTPUT_MAX_CHARS=CAP)
def test_a_text_part_past_the_room_is_dropped():
    output = [{"type": "input_text", "text": "a" * 1000}, {"type": "input_text", "text": "b" * 1000}]
    [capped] = filtered([{"type": "function_call_output", "call_id": "c", "output": output}])
    assert len(capped["output"]) == 1
    text = capped["output"][0]["text"]
    assert len(text) <= CAP and set(text.split("\n")[0]) == {"a"} and "[truncated: 2000 characters" in text


@override_settings(HARNESS_TOOL_OUTPUT_MAX_CHARS=CAP)
def test_a_single_part_and_shell_outputs_are_cut_in_their_own_shape():
    [single] = filtered(
        [{"type": "function_call_output", "call_id": "c", "output": {"type": "text", "text": "m" * 900}}]
    )
    assert isinstance(single["output"], dict) and len(single["output"]["text"]) <= CAP
    shell = [{"stdout": "o" * 900, "stderr": "e" * 900, "outcome": {"type": "exit", "exit_code": 0}}]
    [capped] = filtered([{"type": "shell_call_output", "call_id": "s", "output": shell}])
    [part] = capped["output"]
    assert part["outcome"] == {"type": "exit", "exit_code": 0}
    assert len(part["stdout"]) + len(part["stderr"]) <= CAP and "[truncated: 1800 characters" in part["stderr"]


@override_settings(HARNESS_TOOL_OUTPUT_MAX_CHARS=CAP)
def test_outputs_without_text_are_left_as_they_are():
    items = [
        {"type": "function_call_output", "call_id": "c", "output": None},
        {
            "type": "computer_call_output",
            "call_id": "d",
            "output": {"type": "computer_screenshot", "image_url": "u" * 900},
        },
    ]
    assert all(after is before for after, before in zip(filtered(items), items, strict=True))


def test_the_stored_text_of_a_tool_output_is_what_the_model_reads():
    assert tool_output_text("plain") == "plain"
    assert tool_output_text([{"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "u"}]) == (
        "a\n[input_image]"
    )
    assert tool_output_text({"type": "text", "text": "m"}) == "m"
    shell = [{"stdout": "out", "stderr": "err", "outcome": {"type": "exit", "exit_code": 1}}]
    assert tool_output_text(shell) == "out\nerr"
    assert tool_output_text(None) is None and tool_output_text([]) is None and tool_output_text([1, 2]) is None
