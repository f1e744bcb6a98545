"""The README documents every setting, command group and error class (datasette's test_docs)."""

from __future__ import annotations

import inspect

import pytest

import viz.errors
from viz.cli import app
from viz.config import Settings
from worlds.catalogue import REPO

README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field: str) -> None:
    assert f"VIZ_{field.upper()}" in README


@pytest.mark.parametrize(
    "group", [group.name for group in app.registered_groups] + ["generate", "serve"]
)
def test_every_command_group_has_a_readme_example(group: str) -> None:
    assert f"viz {group}" in README


@pytest.mark.parametrize(
    "name",
    [
        name
        for name, value in inspect.getmembers(viz.errors, inspect.isclass)
        if issubclass(value, viz.errors.VizError) and value is not viz.errors.VizError
    ],
)
def test_every_error_class_is_documented(name: str) -> None:
    assert f"`{name}`" in README


def test_readme_shows_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README


def _request_fields() -> list[str]:
    from viz.serving.embeddings import EmbeddingBody
    from viz.serving.protocol import REFUSED, ChatBody, TextBody

    fields = {*ChatBody.model_fields, *TextBody.model_fields, *EmbeddingBody.model_fields}
    return sorted({*fields, *REFUSED} - {"schema_"})


@pytest.mark.parametrize("field", _request_fields())
def test_every_openai_request_field_is_in_the_readme_table(field: str) -> None:
    assert f"`{field}`" in README
