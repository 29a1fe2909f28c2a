"""Every shell command in README.md and docs/ names things that exist: its script, the script's options, its config
file and config keys, its make target. A renamed option or key fails here, not in a user's terminal."""

import re
import shlex
from pathlib import Path

import pytest

from pml_vmf.training.config import load_config

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHON = {"python", "python3", ".venv/bin/python"}
# Scripts whose free KEY=VALUE arguments (or --set values) are config overrides.
TAKES_OVERRIDES = {"recipes/train.py", "recipes/evaluate.py", "benchmarks/benchmark.py"}


def _shell_blocks(page: Path) -> list:
    """The texts of the page's unlabelled, bash and sh code blocks (fences paired in order, whatever their language)."""
    blocks, language, lines = [], None, []
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            if language is None:
                language, lines = line[3:].strip() or "shell", []
            else:
                if language in ("shell", "bash", "sh"):
                    blocks.append("\n".join(lines))
                language = None
        elif language is not None:
            lines.append(line)
    return blocks


def _shell_commands(page: Path) -> list:
    """The command lines of the page's shell blocks, continuations joined, comments left out."""
    commands = []
    for block in _shell_blocks(page):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def _commands() -> list:
    return [(page.relative_to(REPO).as_posix(), c) for page in PAGES for c in _shell_commands(page)]


def _script_and_args(words: list):
    if words[:2] == ["accelerate", "launch"]:
        scripts = [i for i, w in enumerate(words) if w.endswith(".py")]
        return (words[scripts[0]], words[scripts[0] + 1 :]) if scripts else (None, [])
    if words[0] in PYTHON and len(words) > 1 and words[1].endswith(".py"):
        return words[1], words[2:]
    return None, []


def _options(script: Path) -> set:
    return set(re.findall(r"[\"'](--[a-z0-9][a-z0-9-]*)[\"']", script.read_text())) | {"--help"}


def _make_targets() -> set:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", (REPO / "Makefile").read_text(), flags=re.M))


def test_the_pages_have_commands_to_check():
    scripts = [_script_and_args(shlex.split(c))[0] for _, c in _commands()]
    assert len([s for s in scripts if s]) >= 10


@pytest.mark.parametrize("page, command", _commands(), ids=lambda v: v if v.endswith(".md") else v[:60])
def test_a_documented_command_names_a_script_options_config_and_keys_that_exist(page, command):
    words = shlex.split(command)
    if words[0] == "make":
        assert set(w for w in words[1:] if "=" not in w) <= _make_targets(), f"{page}: {command}"
        return
    script, args = _script_and_args(words)
    if script is None:
        return  # git, pip, npm and the like
    path = REPO / script
    assert path.is_file(), f"{page}: {script} does not exist"
    unknown = [a.split("=")[0] for a in args if a.startswith("--") and a.split("=")[0] not in _options(path)]
    assert not unknown, f"{page}: {script} has no option {unknown}"
    config = args[args.index("--config") + 1] if "--config" in args else None
    if config is None or not config.startswith("recipes/"):
        return  # a config of the user's own
    assert (REPO / config).is_file(), f"{page}: config {config} does not exist"
    if script in TAKES_OVERRIDES:
        overrides = [a for a in args if re.match(r"^[a-z_]+\.[a-z_.]+=", a)]
        load_config(REPO / config, overrides)  # a key that does not exist is a ConfigError naming it


def _anchors(page: Path) -> set:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", [*PAGES, REPO / "BENCHMARKS.md", REPO / "CHANGELOG.md"], ids=lambda p: p.name)
def test_every_relative_link_of_a_page_points_at_a_file_and_heading_that_exist(page):
    broken = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        linked = page.parent / target if target else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
            broken.append(f"{target}#{anchor}" if anchor else target)
    assert not broken, f"{page.name} links to {broken}"
