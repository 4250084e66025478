"""Every relative link and repository path the repository's own text names resolves.

Checked: Markdown links (`[text](path#anchor)`, outside code) and, in Markdown, the
Dockerfile's and YAML files' comments, every path that starts with one of the repository's
top-level directories (`deploy/manifests`, `docs/cli.md#console`), plus paths in Markdown
code spans that name a file by its extension (`operator/kubevisor/agent/probe.py`).
A `<placeholder>` or `*` in a path must match at least one file. Anchors must name a
heading of the target Markdown file, as GitHub spells it. Python strings are checked for
their `docs/...` references only (error messages point users there). A kubectl command
reads as a path too (`rollout status deploy/NAME`): write `deployment/NAME` instead.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import REPO

OUTSIDE_THE_REPOSITORY = frozenset({"../shared/DESIGN.md"})
"""Named on purpose although a clone does not have them: the design document lives beside
the main checkout, not in it."""

FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
EXTENSIONS = "py|md|yaml|yml|json|lua|sh|toml|lock|txt|cfg"
FILE_IN_CODE_SPAN = re.compile(rf"`((?:\.\./|[\w.-]+/)[\w./<>*-]*\.(?:{EXTENSIONS}))(#[\w-]+)?`")
DOCS_IN_PYTHON = re.compile(r"(?<![\w./-])(docs/[\w./-]*\.md)(#[\w-]+)?")


@dataclass(frozen=True, slots=True)
class Reference:
    source: str
    """The file that names it, relative to the repository."""
    target: str
    """As written: a path relative to the source's directory or the repository, a glob."""
    anchor: str | None = None


def tracked(root: Path) -> list[str]:
    done = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, text=True
    )
    return [name for name in done.stdout.split("\0") if name]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown text's headings (outside code), numbered when repeated."""
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        base = slug(heading)
        name, n = base, 0
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def top_level_path(tops: Iterable[str]) -> re.Pattern[str]:
    """A path that starts with one of the repository's top-level directories, not inside
    another path or a URL, with an optional #anchor."""
    names = "|".join(re.escape(t) for t in sorted(tops, key=len, reverse=True))
    return re.compile(rf"(?<![\w./~:@-])((?:{names})/[\w./<>*@+-]*[\w>*/])(#[\w-]+)?")


def comments(text: str) -> str:
    """The comments of a YAML file or Dockerfile, one per line."""
    return "\n".join(m.group(1) for m in re.finditer(r"(?:^|\s)#(.*)$", text, re.MULTILINE))


def references(root: Path, files: list[str]) -> list[Reference]:
    """What every checked file names, by the rules in the module's docstring."""
    paths = top_level_path({f.split("/", 1)[0] for f in tracked(root) if "/" in f})
    found: list[Reference] = []
    for name in files:
        text = (root / name).read_text(errors="replace")
        if name.endswith(".md"):
            prose = CODE_SPAN.sub("", FENCE.sub("", text))
            for target in LINK.findall(prose):
                if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # not http:, mailto: ...
                    path, _, anchor = target.partition("#")
                    found.append(Reference(name, path or name, anchor or None))
            spans = FILE_IN_CODE_SPAN.findall(text)
            found += [Reference(name, path, anchor[1:] or None) for path, anchor in spans]
        elif name == "Dockerfile" or name.endswith((".yaml", ".yml")):
            text = comments(text)
        elif name.endswith(".py"):
            docs = DOCS_IN_PYTHON.findall(text)
            found += [Reference(name, path, anchor[1:] or None) for path, anchor in docs]
            continue
        else:
            continue
        named = paths.findall(text)
        found += [Reference(name, path, anchor[1:] or None) for path, anchor in named]
    return found


def dead(root: Path, reference: Reference) -> str | None:
    """Why a reference does not resolve, None when it does. Tried from the repository's
    root, then from the naming file's directory (Markdown links are relative to it)."""
    if reference.target in OUTSIDE_THE_REPOSITORY:
        return None
    pattern = re.sub(r"<[^>]*>", "*", reference.target).rstrip("/") or "."
    bases = [root, (root / reference.source).parent]
    matches = [
        m
        for base in bases
        for m in (base.glob(pattern) if "*" in pattern else [base / pattern])
        if m.exists() and m.resolve().is_relative_to(root.resolve())
    ]
    if not matches:
        return f"{reference.source}: {reference.target} does not exist"
    if reference.anchor is None or not matches[0].name.endswith(".md"):
        return None
    if reference.anchor not in anchors(matches[0].read_text()):
        return f"{reference.source}: {reference.target}#{reference.anchor}: no such heading"
    return None


def checked_files() -> list[str]:
    """Every tracked file the rules apply to, but this one: its examples are made up."""
    suffixes = (".md", ".yaml", ".yml", ".py")
    itself = Path(__file__).resolve().relative_to(REPO).as_posix()
    return [f for f in tracked(REPO) if (f == "Dockerfile" or f.endswith(suffixes)) and f != itself]


@pytest.mark.parametrize(
    "name", [f for f in checked_files() if not f.endswith(".py")] + ["*.py"], ids=str
)
def test_every_relative_reference_resolves(name: str) -> None:
    files = [f for f in checked_files() if f.endswith(".py")] if name == "*.py" else [name]
    problems = [p for r in references(REPO, files) if (p := dead(REPO, r))]
    assert problems == []


def test_the_markdown_files_do_name_paths() -> None:
    """The rules find what they are for: a guard against a pattern that matches nothing."""
    named = {(r.source, r.target) for r in references(REPO, checked_files())}
    assert ("README.md", "docs/install.md") in named
    assert ("docs/install.md", "../README.md") in named
    assert ("deploy/manifests/agent.yaml", "docs/install.md") in named
    assert ("Dockerfile", "docs/install.md") in named


# -- the checker itself, on a repository of its own ------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    files = {
        "README.md": "# Top\n\n## Two words\n\n## Two words\n",
        "docs/guide.md": "## The `cli` tool\n\n```sh\n# not a heading\n```\n",
        "deploy/a/health.lua": "",
        "deploy/x.yaml": "key: value\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param("docs/new.md", "[g](guide.md) [r](../README.md#top)", [], id="relative-links"),
        pytest.param("docs/new.md", "[g](gide.md)", ["gide.md does not exist"], id="dead-link"),
        pytest.param(
            "docs/new.md",
            "[g](guide.md#the-cli-tool) [r](../README.md#two-words-1)",
            [],
            id="anchors-as-github-spells-them",
        ),
        pytest.param(
            "docs/new.md",
            "[g](guide.md#not-a-heading)",
            ["guide.md#not-a-heading: no such heading"],
            id="heading-in-code-is-no-anchor",
        ),
        pytest.param(
            "docs/new.md", "# Here\n[h](#here) [n](#nope)", ["#nope: no such"], id="same-file"
        ),
        pytest.param(
            "README.md",
            "see `deploy/<dir>/health.lua` and deploy/x.yaml, not deploy/y.yaml",
            ["deploy/y.yaml does not exist"],
            id="paths-in-prose-and-placeholders",
        ),
        pytest.param(
            "README.md", "in `drivers/base.py`", ["drivers/base.py does not exist"], id="span"
        ),
        pytest.param(
            "README.md",
            "```sh\nkubectl apply -k deploy/gone\n```\n[x](https://example.com/deploy/gone)",
            ["deploy/gone does not exist"],
            id="commands-count-urls-do-not",
        ),
        pytest.param(
            "deploy/z.yaml",
            "# see docs/guide.md#the-cli-tool and docs/install.md\nk: docs/nothing.md\n",
            ["docs/install.md does not exist"],
            id="yaml-comments-only",
        ),
        pytest.param(
            "README.md", "`../../etc/passwd.txt`", ["does not exist"], id="nothing-outside"
        ),
    ],
)
def test_the_checker(repo: Path, name: str, text: str, expected: list[str]) -> None:
    (repo / name).write_text(text)
    problems = [p for r in references(repo, [name]) if (p := dead(repo, r))]
    assert len(problems) == len(expected), problems
    for problem, part in zip(problems, expected, strict=True):
        assert part in problem
