"""The README and docs/*.md work as written: every code block in them is run or checked, so they
cannot rot.

- ```python blocks run as written, each in a fresh interpreter (sys.executable, in an empty
  temporary folder, the repository root on PYTHONPATH), and must exit 0.
- ```bash / ```sh / ```console blocks are checked: every `make <target>` names a target of the
  Makefile, every repository path they name (examples/..., bench/..., tests/...) exists, every
  `--flag` given to an example is one its argparse defines; the cheap commands without side
  effects (`python -m fastloss`) run and must exit 0.
- ```text blocks (output, diagrams) are left alone; any other fence, or none, fails.
- Links and images point inside the repository, at files that exist (and at headings that exist,
  for `#anchors`).

The checks that need the source tree (the Makefile, docs/, csrc/...) are skipped where the tests
run outside a checkout (tests/wheel/check.sh runs the suite from a copy of tests/, bench/,
examples/ and README.md against the installed wheel); the Python blocks run there too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A source checkout, not the copy of tests/ that the wheel check runs against an installed package.
CHECKOUT = (ROOT / "Makefile").is_file() and (ROOT / "setup.py").is_file()
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

RUN = {"python"}                     # run as written
CHECK = {"bash", "sh", "console"}    # make targets, paths and flags checked; cheap commands run
INERT = {"text"}                     # output, diagrams: not code
SNIPPET_TIMEOUT_S = 120

# Top-level folders of the repository whose paths a shell block may name.
REPO_DIRS = ("examples", "bench", "tests", "docs", "fastloss", "csrc", "kernels")
PYTHONS = {"python", "python3", ".venv/bin/python", "./.venv/bin/python"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int      # of the opening fence, 1-based
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file (indented ones too, so none escapes the checks)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        info = m["info"].strip()
        lang = info.split()[0].lower() if info else ""
        start, body, i = i + 1, [], i + 1
        closed = False
        while i < len(lines):
            if lines[i].strip().startswith(fence[0] * len(fence)) and set(lines[i].strip()) == {fence[0]}:
                closed = True
                i += 1
                break
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        blocks.append(Block(path, start, lang if closed else "<unclosed fence>", "\n".join(body) + "\n"))
    return blocks


BLOCKS = [b for doc in DOCUMENTS for b in fenced_blocks(doc)]


def by_lang(langs: set[str]) -> list:
    return [pytest.param(b, id=f"{b.where}-{b.lang}") for b in BLOCKS if b.lang in langs]


def snippet_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def test_the_readme_has_runnable_examples():
    """The extraction finds what it should: a README without Python blocks would pass vacuously."""
    readme = [b for b in BLOCKS if b.path.name == "README.md"]
    assert sum(b.lang == "python" for b in readme) >= 5, [b.where for b in readme]
    assert any(b.lang in CHECK for b in readme)


@pytest.mark.parametrize("block", [pytest.param(b, id=f"{b.where}-{b.lang or 'none'}") for b in BLOCKS])
def test_every_fence_names_a_known_language(block: Block):
    assert block.lang in RUN | CHECK | INERT, (
        f"{block.where}: a code block must be ```python (run), ```bash/```sh/```console (checked) "
        f"or ```text (not code), got {block.lang or 'no language'!r}")


@pytest.mark.parametrize("block", by_lang(RUN))
def test_python_block_runs_as_written(block: Block, tmp_path: Path):
    script = tmp_path / "snippet.py"
    script.write_text(block.code, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=snippet_env(),
                          capture_output=True, text=True, timeout=SNIPPET_TIMEOUT_S)
    assert proc.returncode == 0, (
        f"the ```python block at {block.where} failed (exit {proc.returncode}):\n"
        f"--- code\n{block.code}--- stdout\n{proc.stdout[-3000:]}--- stderr\n{proc.stderr[-6000:]}")


# --- shell blocks ----------------------------------------------------------------------------------

ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"&&", "||", ";", "|", "&"}


def shell_commands(block: Block) -> list[list[str]]:
    """The commands of a shell block, as token lists (comments dropped, continuations joined;
    in a console block only the lines after a `$ ` prompt)."""
    lines = block.code.splitlines()
    if block.lang == "console":
        lines = [line.strip()[2:] for line in lines if line.strip().startswith("$ ")]
    joined, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    if pending:
        joined.append(pending)
    commands = []
    for line in joined:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in lexer:
            if token in SEPARATORS:
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def without_assignments(command: list[str]) -> tuple[dict[str, str], list[str]]:
    env, i = {}, 0
    while i < len(command) and ASSIGNMENT.match(command[i]):
        name, value = command[i].split("=", 1)
        env[name] = value
        i += 1
    return env, command[i:]


def makefile_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+(?:\s+[A-Za-z0-9_.-]+)*)\s*:(?!=)", line)
        if m and not line.startswith((".PHONY", "\t")):
            targets.update(m.group(1).split())
    return targets


def repository_paths(command: list[str]) -> list[str]:
    paths = []
    for token in command:
        token = token.split("=", 1)[-1] if token.startswith("--") else token
        token = token.removeprefix("./")
        if token.split("/", 1)[0] in REPO_DIRS and "/" in token:
            paths.append(token)
    return paths


def argparse_flags(script: Path) -> set[str]:
    return set(re.findall(r"add_argument\(\s*[\"'](--[A-Za-z0-9_-]+)[\"']", script.read_text(encoding="utf-8")))


def check_shell_command(block: Block, command: list[str]) -> list[str]:
    """What is wrong with one command of a shell block (empty when nothing is)."""
    problems = []
    env, argv = without_assignments(command)
    if not argv:
        return problems
    program = argv[0]
    if CHECKOUT:
        if Path(program).name == "make":
            targets = makefile_targets()
            for arg in argv[1:]:
                if not arg.startswith("-") and not ASSIGNMENT.match(arg) and arg not in targets:
                    problems.append(f"`make {arg}`: no such target in the Makefile")
        for path in repository_paths(argv):
            if not any(ROOT.glob(path.rstrip("/"))):
                problems.append(f"{path}: no such file or folder in the repository")
    # Flags given to an example must be flags its argparse defines.
    for i, token in enumerate(argv):
        script = ROOT / token.removeprefix("./")
        if token.startswith("examples/") and token.endswith(".py") and script.is_file():
            known = argparse_flags(script)
            for flag in argv[i + 1:]:
                if flag.startswith("--") and flag.split("=", 1)[0] not in known:
                    problems.append(f"{token} has no option {flag.split('=', 1)[0]} (it has {sorted(known)})")
            break
    return problems


def cheap_command(command: list[str]) -> tuple[dict[str, str], list[str]] | None:
    """(environment, argv) of a command safe and quick to run here, or None."""
    env, argv = without_assignments(command)
    if len(argv) == 3 and argv[0] in PYTHONS and argv[1:] == ["-m", "fastloss"]:
        return env, [sys.executable, "-m", "fastloss"]
    return None


@pytest.mark.parametrize("block", by_lang(CHECK))
def test_shell_block_names_what_exists(block: Block):
    problems = [p for c in shell_commands(block) for p in check_shell_command(block, c)]
    assert not problems, f"the ```{block.lang} block at {block.where}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("block", [p for p in by_lang(CHECK)
                                   if any(cheap_command(c) for c in shell_commands(p.values[0]))])
def test_shell_block_cheap_commands_run(block: Block, tmp_path: Path):
    for command in shell_commands(block):
        cheap = cheap_command(command)
        if cheap is None:
            continue
        extra, argv = cheap
        proc = subprocess.run(argv, cwd=tmp_path, env={**snippet_env(), **extra}, capture_output=True,
                              text=True, timeout=SNIPPET_TIMEOUT_S)
        assert proc.returncode == 0, (f"`{shlex.join(command)}` from {block.where} failed "
                                      f"(exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def test_shell_block_checker_catches_mistakes():
    """The checks above can fail: a missing target, a missing path and an unknown flag are caught."""
    if not CHECKOUT:
        pytest.skip("needs the source checkout (the Makefile)")
    block = Block(ROOT / "README.md", 0, "bash",
                  "make no-such-target\npython examples/no_such_example.py\n"
                  "python examples/siamese.py --no-such-flag 3   # a comment: make ignored\n")
    problems = [p for c in shell_commands(block) for p in check_shell_command(block, c)]
    assert len(problems) == 3, problems


# --- links ---------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose(path: Path) -> str:
    """The Markdown without its fenced blocks and inline code, where links are not links."""
    text = path.read_text(encoding="utf-8")
    lines, out, fence = text.splitlines(), [], None
    for line in lines:
        m = FENCE.match(line)
        if fence is None and m:
            fence = m["fence"][0]
            out.append("")
            continue
        if fence is not None:
            if line.strip() and set(line.strip()) == {fence}:
                fence = None
            out.append("")
            continue
        out.append(re.sub(r"(`+)(?:(?!\1).)+\1", "", line))
    return "\n".join(out)


def github_anchor(heading: str) -> str:
    text = re.sub(r"`|\*", "", heading.strip()).lower()  # GitHub's slug: markup and punctuation go
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, counts = set(), {}
    for line in prose(path).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = github_anchor(m.group(1))
            n = counts.get(slug, 0)
            counts[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


@pytest.mark.parametrize("doc", [pytest.param(d, id=str(d.relative_to(ROOT))) for d in DOCUMENTS])
def test_links_stay_inside_the_repository_and_resolve(doc: Path):
    if not CHECKOUT:
        pytest.skip("needs the source checkout (the files the links name)")
    text = prose(doc)
    problems = []
    for target in LINK.findall(text) + REFERENCE.findall(text):
        if SCHEME.match(target) or target.startswith("//"):
            problems.append(f"{target}: points outside the repository")
            continue
        path_part, _, anchor = target.partition("#")
        file = (doc.parent / path_part).resolve() if path_part else doc
        try:
            file.relative_to(ROOT)
        except ValueError:
            problems.append(f"{target}: points outside the repository")
            continue
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not problems, f"links in {doc.relative_to(ROOT)}:\n  " + "\n  ".join(problems)
