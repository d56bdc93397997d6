"""The documentation stays true: the configuration reference is generated from the config dataclasses, and
every recipe the README names exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from dist_vgg.train.config import config_reference, recipe_names

ROOT = Path(__file__).resolve().parent.parent


def test_config_reference_is_current() -> None:
    doc = (ROOT / "docs" / "config-reference.md").read_text()
    assert doc == config_reference(), (
        "docs/config-reference.md is stale: regenerate it with "
        "`dist-vgg train --print-config-reference > docs/config-reference.md`"
    )


def test_readme_recipes_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"--recipe ([\w-]+)", readme)) - {"NAME"}
    assert named, "README names no recipe"
    assert named <= set(recipe_names()), f"README names unknown recipes: {named - set(recipe_names())}"


def test_readme_cli_commands_parse() -> None:
    """Every `dist-vgg <command>` the README uses is a registered subcommand with a working --help."""
    readme = (ROOT / "README.md").read_text()
    commands = set(re.findall(r"^dist-vgg (\w+)", readme, flags=re.M)) | {"preflight"}
    for cmd in sorted(commands):
        r = subprocess.run(
            [sys.executable, "-m", "dist_vgg.cli", cmd, "--help"], capture_output=True, text=True
        )
        assert r.returncode == 0, f"dist-vgg {cmd} --help failed: {r.stderr}"
