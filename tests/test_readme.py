"""The README is a user's document: its commands and configuration reference must match the code."""

from __future__ import annotations

from pathlib import Path

from mpo_ros.tools.reference import BEGIN, END, render

README = Path(__file__).resolve().parent.parent / "README.md"


def test_config_reference_matches_the_command_dataclasses() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "README lost its configuration reference markers"
    current = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert current == render(), (
        "README config reference is stale: paste `python -m mpo_ros.tools.reference` into it"
    )


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
