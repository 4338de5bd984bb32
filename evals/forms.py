from __future__ import annotations

import json
from typing import Any

from django import forms

from evals.models import Dataset, GoldenCase


def _json_list(value: str, field: str) -> list[Any]:
    if not value.strip():
        return []
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise forms.ValidationError(f"{field}: not valid JSON ({exc})") from None
    if not isinstance(parsed, list):
        raise forms.ValidationError(f"{field}: expected a JSON list")
    return parsed


ASSERTION_TYPES = {"exact", "contains", "not_contains", "regex", "json_field", "json_schema"}


def clean_assertions(value: Any) -> list[Any]:
    assertions = value if isinstance(value, list) else _json_list(str(value), "assertions")
    for index, check in enumerate(assertions, start=1):
        if not isinstance(check, dict) or check.get("type") not in ASSERTION_TYPES:
            raise forms.ValidationError(
                f"assertion {index}: each needs a type, one of {', '.join(sorted(ASSERTION_TYPES))}"
            )
        if check["type"] == "json_field" and not check.get("path"):
            raise forms.ValidationError(f"assertion {index}: json_field needs a path")
    return assertions


def clean_tools(value: Any) -> list[Any]:
    tools = value if isinstance(value, list) else _json_list(str(value), "expected tools")
    for index, tool in enumerate(tools, start=1):
        if not (isinstance(tool, dict) and isinstance(tool.get("name"), str) and tool["name"]):
            raise forms.ValidationError(f'expected tool {index}: write {{"name": "...", "arguments": {{...}}}}')
        if "arguments" in tool and not isinstance(tool["arguments"], dict):
            raise forms.ValidationError(f"expected tool {index}: arguments must be an object")
    return tools


class PromoteForm(forms.Form):
    dataset = forms.CharField(
        max_length=100,
        initial="regressions",
        help_text="An existing dataset or a new one (letters, digits, - and _).",
        widget=forms.TextInput(attrs={"list": "datasets"}),
    )
    name = forms.CharField(max_length=200)
    input = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "readonly": True}), required=False)
    actual_output = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "readonly": True}), required=False, label="What the run answered"
    )
    expected_output = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}), required=False, help_text="The corrected answer."
    )
    output_match = forms.ChoiceField(choices=GoldenCase.Match.choices, initial=GoldenCase.Match.CONTAINS)
    assertions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text='JSON list, e.g. [{"type": "regex", "value": "= 42$"}, {"type": "not_contains", "value": "error"}]',
    )
    expected_tools = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text='JSON list of the tools the run must call: [{"name": "calculate", "arguments": {"expression": "6 * 7"}}]',
    )
    forbidden_tools = forms.CharField(required=False, help_text="Comma-separated tool names that must not be called.")
    tags = forms.CharField(required=False, help_text="Comma-separated.")

    def clean_dataset(self) -> str:
        name = self.cleaned_data["dataset"].strip()
        field = Dataset._meta.get_field("name")
        for validator in field.validators:
            validator(name)
        return name

    def clean_assertions(self) -> list[Any]:
        return clean_assertions(self.cleaned_data["assertions"])

    def clean_expected_tools(self) -> list[Any]:
        return clean_tools(self.cleaned_data["expected_tools"])

    def clean_forbidden_tools(self) -> list[str]:
        return [name.strip() for name in self.cleaned_data["forbidden_tools"].split(",") if name.strip()]

    def clean_tags(self) -> list[str]:
        return [tag.strip() for tag in self.cleaned_data["tags"].split(",") if tag.strip()]


class BulkPromoteForm(forms.Form):
    dataset = forms.CharField(max_length=100, initial="regressions")

    def clean_dataset(self) -> str:
        return PromoteForm.clean_dataset(self)  # type: ignore[arg-type]


class GoldenCaseForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = GoldenCase
        fields = [
            "dataset",
            "name",
            "active",
            "agent",
            "model",
            "input",
            "history",
            "expected_output",
            "output_match",
            "assertions",
            "expected_tools",
            "forbidden_tools",
            "tags",
            "cassette",
        ]

    def clean_assertions(self) -> list[Any]:
        return clean_assertions(self.cleaned_data["assertions"])

    def clean_expected_tools(self) -> list[Any]:
        return clean_tools(self.cleaned_data["expected_tools"])

    def clean_agent(self) -> str:
        from runs.published import agent_names

        agent = self.cleaned_data["agent"]
        names = agent_names()
        if agent not in names:
            raise forms.ValidationError(f"unknown agent {agent!r}; valid agents: {', '.join(names)}")
        return agent
