"""The one YAML loader refuses alias bombs, cycles and deep nesting with one line, and reads
ordinary manifests (anchors and merge keys included) as PyYAML's safe loader does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.errors import ValidationFailed
from ops.safeyaml import MAX_DEPTH, YAMLLimitExceeded, load_all, load_one
from ops.schedulerconfig import read_scheduler_config


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs": each level an anchored list of nine aliases of the one before."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        aliases = ",".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_of_under_500_bytes_is_refused_as_excessive_aliasing() -> None:
    text = alias_bomb()
    assert len(text.encode()) < 500
    with pytest.raises(YAMLLimitExceeded) as caught:
        load_all(text)
    message = str(caught.value)
    assert "document contains excessive aliasing" in message
    assert "\n" not in message


def test_ten_thousand_open_brackets_are_refused_without_a_recursion_error() -> None:
    for text in ("[" * 10_000, "{a: " * 10_000, "x: " + "[" * 10_000 + "]" * 10_000):
        with pytest.raises(YAMLLimitExceeded) as caught:
            load_all(text)
        assert str(caught.value) == (f"line 1: collections nested deeper than {MAX_DEPTH} levels")


def test_deep_block_nesting_is_refused_at_the_line_that_goes_too_deep() -> None:
    text = (
        "".join("  " * depth + f"k{depth}:\n" for depth in range(MAX_DEPTH + 5))
        + "  " * (MAX_DEPTH + 5)
        + "leaf: 1\n"
    )
    with pytest.raises(YAMLLimitExceeded, match=r"^line \d+: collections nested deeper"):
        load_one(text)


def test_nesting_up_to_the_limit_reads() -> None:
    text = "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH
    value = load_one(text)
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == [1]


def test_an_alias_inside_the_node_it_names_is_refused() -> None:
    with pytest.raises(YAMLLimitExceeded, match=r"alias \*a is inside the node it names"):
        load_all("a: &a [1, *a]\n")


def test_ordinary_anchors_and_merge_keys_read_as_the_safe_loader_reads_them() -> None:
    text = """\
defaults: &defaults {image: nginx, resources: {requests: {cpu: 100m}}}
containers:
  - <<: *defaults
    name: a
  - <<: *defaults
    name: b
---
---
kind: Pod
created: 2024-05-02T10:11:12Z
"""
    assert load_all(text) == list(yaml.safe_load_all(text))


def test_many_small_aliases_within_the_budget_read() -> None:
    text = "base: &b {x: 1}\nitems:\n" + "".join("  - *b\n" for _ in range(2_000))
    assert len(load_one(text)["items"]) == 2_000


def test_the_scheduler_configuration_file_is_read_within_the_limits(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.yaml"
    path.write_text(alias_bomb())
    with pytest.raises(ValidationFailed, match=r"^refused: line 5: document contains excessive"):
        read_scheduler_config(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (alias_bomb(), "document contains excessive aliasing"),
        ("[" * 10_000, f"collections nested deeper than {MAX_DEPTH} levels"),
    ],
    ids=["alias-bomb", "deep-nesting"],
)
def test_the_cli_refuses_a_hostile_manifest_with_one_line(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(content)
    # No server listens there: the file must be refused before anything is sent.
    result = subprocess.run(
        [sys.executable, "-m", "ops", "--server", "nats://127.0.0.1:9", "apply", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"error: {path}: refused: line ")
    assert reason in lines[0]
