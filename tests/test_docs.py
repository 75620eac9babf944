"""The documentation stays true to the code: every relative link in README.md and docs/*.md resolves (anchors into
markdown pages included), and every `bench` command the pages show, in fenced blocks or inline code, names a
subcommand and options that `bench <cmd> --help` lists. Reads the CLI's own definition (no torch imported)."""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from cli_runner import bench

from bench.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
SEPARATORS = {"&&", "||", "|", ";"}


@dataclass(frozen=True)
class Page:
    path: Path
    prose: tuple[tuple[int, str], ...]  # (line number, text) outside fenced blocks
    blocks: tuple[tuple[int, str, str], ...]  # (first line number, language, text) of each fenced block


def read_page(path: Path) -> Page:
    prose, blocks = [], []
    fence, language, start, body = None, "", 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None:
            opened = FENCE.match(line)
            if opened:
                fence, language, start, body = opened.group(1), opened.group(2).lower(), number + 1, []
            else:
                prose.append((number, line))
        elif line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            blocks.append((start, language, "\n".join(body)))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"{path}: a fenced block opened on line {start - 1} is never closed"
    return Page(path, tuple(prose), tuple(blocks))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in read_page(path).prose:
        heading = HEADING.match(line)
        if not heading:
            continue
        base = slug(heading.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return frozenset(found)


def link_problems(page: Page) -> list[str]:
    """Every relative link of the page that does not resolve: a missing file, or an anchor no heading has."""
    problems = []
    for number, line in page.prose:
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if SCHEME.match(target):
                continue  # http(s), mailto: not checked here
            file_part, _, anchor = target.partition("#")
            resolved = (page.path.parent / file_part).resolve() if file_part else page.path
            where = f"{page.path.relative_to(ROOT) if page.path.is_relative_to(ROOT) else page.path}:{number}"
            if not resolved.exists():
                problems.append(f"{where}: link to {target}: {resolved} does not exist")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where}: link to {target}: no heading with the anchor #{anchor} in {resolved.name}")
    return problems


def shell_lines(text: str) -> list[tuple[int, str]]:
    """The logical lines of a shell block with their offsets in it: continuations (a trailing backslash) joined,
    `$ ` prompts dropped."""
    lines, pending, first = [], "", 0
    for offset, raw in enumerate(text.splitlines()):
        line = raw.rstrip()
        first = offset if not pending else first
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append((first, (pending + line).strip().removeprefix("$ ")))
        pending = ""
    if pending:
        lines.append((first, pending.strip()))
    return lines


def bench_commands(line: str) -> list[list[str]]:
    """The `bench ...` commands on a shell line (comments dropped; `&&`, `||`, `|` and `;` separate commands):
    each as its words from `bench` on."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        words = line.split("#", 1)[0].split()
    commands, current = [], []
    for word in words:
        if word in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(word.removesuffix(";"))
    commands.append(current)
    return [c[c.index("bench"):] for c in commands if "bench" in c]


@functools.cache
def cli() -> dict[str | None, frozenset[str]]:
    """The options each visible subcommand accepts, as its `--help` shows them; None: the group's own."""
    group = typer.main.get_command(app)

    def options(command) -> frozenset[str]:
        return frozenset({"--help"} | {o for p in command.params if not getattr(p, "hidden", False)
                                       for o in (*p.opts, *p.secondary_opts) if o.startswith("-")})

    commands = {name: options(c) for name, c in group.commands.items() if not getattr(c, "hidden", False)}
    return {None: options(group), **commands}


def command_problems(words: list[str]) -> list[str]:
    """What in one `bench ...` command the CLI does not have: an unknown subcommand, or an option its `--help` does
    not list."""
    if words[:1] != ["bench"] or len(words) == 1:
        return []
    subcommand = None if words[1].startswith("-") else words[1]
    if subcommand is not None and subcommand not in cli():
        return [f"'bench {subcommand}' is not a command (bench --help lists {', '.join(sorted(filter(None, cli())))})"]
    allowed = cli()[subcommand]
    problems = []
    for word in words[1:]:
        option = word.strip("[]()").split("=", 1)[0]
        if re.fullmatch(r"--?[A-Za-z][\w-]*", option) and option not in allowed:
            problems.append(f"'{option}' is not an option of 'bench{' ' + subcommand if subcommand else ''}'")
    return problems


def shown_commands(page: Page) -> list[tuple[int, str, list[str]]]:
    """Every `bench` command the page shows: in shell-like fenced blocks, and in inline code that starts with it."""
    found = []
    for start, language, text in page.blocks:
        if language in SHELL_LANGUAGES:
            for offset, line in shell_lines(text):
                found += [(start + offset, line, words) for words in bench_commands(line)]
    for number, line in page.prose:
        for _, code in INLINE_CODE.findall(line):
            if code.strip().startswith("bench "):
                found += [(number, code, words) for words in bench_commands(code.strip())]
    return found


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_pages_exist():
    names = {p.name for p in PAGES}
    assert "README.md" in names and len(PAGES) > 1, "README.md and docs/*.md"


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_relative_link_resolves(path):
    assert link_problems(read_page(path)) == []


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_bench_command_shown_exists_in_the_cli(path):
    page = read_page(path)
    problems = [f"{page_id(path)}:{number}: {shown!r}: {problem}"
                for number, shown, words in shown_commands(page) for problem in command_problems(words)]
    assert problems == []


def test_the_pages_show_every_command():
    shown = {words[1] for path in PAGES for _, _, words in shown_commands(read_page(path)) if len(words) > 1}
    assert set(filter(None, cli())) <= shown


def test_the_checks_can_fail(tmp_path):
    assert command_problems(["bench", "run", "--grid", "g.yaml"]) == []
    assert command_problems(shlex.split("bench run --no-such-option")) == [
        "'--no-such-option' is not an option of 'bench run'"]
    assert command_problems(["bench", "runn"])
    assert command_problems(["bench", "run", "--as-worker"]), "a hidden option is not documentation"
    assert bench_commands("cd x && bench report --nope 1 # a comment --also") == [["bench", "report", "--nope", "1"]]
    assert [(n, line.split()) for n, line in shell_lines("bench run --grid g \\\n  --limit 2\n$ bench list")] == [
        (0, ["bench", "run", "--grid", "g", "--limit", "2"]), (2, ["bench", "list"])]
    (tmp_path / "other.md").write_text("# A heading: `with` code\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-heading-with-code) [gone](missing.md) [bad](other.md#nowhere) "
                    "[web](https://example.com/x) `[code](not-a-link.md)`\n```\n[in a block](nor-this.md)\n```\n",
                    encoding="utf-8")
    problems = link_problems(read_page(page))
    assert len(problems) == 2 and "missing.md" in problems[0] and "#nowhere" in problems[1]


def test_the_option_lists_are_what_help_prints(monkeypatch, capsys):
    """The checks read the CLI's definition; `bench <cmd> --help` shows every option they allow."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERMINAL_WIDTH", "200")
    for subcommand, options in cli().items():
        assert bench(monkeypatch, *filter(None, [subcommand]), "--help") == 0
        printed = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", capsys.readouterr().out))
        assert options <= printed, subcommand
