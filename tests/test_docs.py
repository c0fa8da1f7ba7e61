"""The documentation: the site builds strictly and offline, and what it says about the command line is true.

- ``mkdocs build --strict`` succeeds (broken links, missing pages and unresolved references fail it), the
  generated command-line page has a section per subcommand, and no built page loads fonts or scripts
  from the network;
- every ``vislab COMMAND ... --flag`` written in README.md or under docs/ is a flag of that command's
  parser (checked in-process against ``vislab.cli.build_parser``), and a made-up flag is caught;
- every subcommand is named in the hand-written pages, not only in the generated reference;
- README.md stays short, and no page speaks of work sessions or numbered issues.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vislab.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 250


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def build_site(out: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of this checkout into ``out`` (the hook imports this checkout's src/)."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]' (make setup installs it)")
    pytest.importorskip("mkdocstrings", reason="the docs extra: pip install -e '.[docs]' (make setup installs it)")
    out = tmp_path_factory.mktemp("site")
    result = build_site(out)
    return out, result


def test_site_builds_strictly(site):
    out, result = site
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (out / "index.html").is_file()
    assert (out / "reference" / "api.html").is_file()
    assert "vislab.api.train" in (out / "reference" / "api.html").read_text()  # mkdocstrings rendered the API


def test_generated_cli_page_has_every_subcommand_and_its_flags(site):
    out, result = site
    assert result.returncode == 0, result.stderr
    page = (out / "reference" / "cli.html").read_text()
    commands = _parsers()
    for name in COMMANDS:
        assert f'id="vislab-{name}"' in page, f"the command-line page has no section for vislab {name}"
    for flag in ("--label-issues", "--max-wait-ms", "--recipe"):  # one flag of audit, serve and train
        assert flag in page
    assert set(commands) == set(COMMANDS)


def test_built_pages_load_nothing_from_the_network(site):
    out, result = site
    assert result.returncode == 0, result.stderr
    external = re.compile(r"""<(?:script|img|iframe)[^>]*\bsrc=["']?(?:https?:)?//|<link[^>]*\bhref=["']?(?:https?:)?//""")
    offenders = []
    for path in out.rglob("*"):
        if path.suffix in (".html", ".css", ".js") and path.is_file():
            text = path.read_text(errors="replace")
            if "fonts.googleapis" in text or "fonts.gstatic" in text:
                offenders.append(f"{path.relative_to(out)}: web fonts")
            if path.suffix == ".html" and external.search(text):
                offenders.append(f"{path.relative_to(out)}: {external.search(text).group(0)}")
    assert not offenders, offenders


# --------------------------------------------------------------------------- flags written in the docs
def _parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


FENCE = re.compile(r"^(\s*)(```|~~~)")
INLINE = re.compile(r"`([^`\n]+)`")
# `vislab SUB` where a shell command starts: at the start of the code, after `&&`, `;`, `|`, `$ `, `-m `
# (torchrun) or environment settings (`ONEDNN_MAX_CPU_ISA=AVX2 vislab train`), never inside a sentence
COMMAND = re.compile(r"(?:^|&&|;|\||\$\s|-m\s)\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*vislab\s+([A-Za-z][\w-]*)")
COMMENT = re.compile(r"(?:^|\s)#(?:\s|$).*")
FLAG = re.compile(r"(?<!\S)(--[A-Za-z][\w-]*)")
END = re.compile(r"\s#\s|\s#$|\|\s|;|&&|\)\s*$")


def code_lines(text: str):
    """(line number, code) for every line of a fenced block (continuations joined) and every inline code span."""
    lines = text.splitlines()
    in_fence, pending, start = False, "", 0
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield start, pending + line
            pending = ""
        else:
            for span in INLINE.findall(line):
                yield number, span


def written_commands(text: str):
    """(line, subcommand, [flags]) for each ``vislab SUB ...`` in the code of a Markdown text."""
    for number, code in code_lines(text):
        code = COMMENT.sub("", code)
        matches = list(COMMAND.finditer(code))
        for i, match in enumerate(matches):
            rest = code[match.end(): matches[i + 1].start() if i + 1 < len(matches) else len(code)]
            end = END.search(rest)
            rest = rest[: end.start()] if end else rest
            yield number, match.group(1), [f.split("=", 1)[0] for f in FLAG.findall(rest)]


def wrong_flags(text: str, parsers: dict[str, argparse.ArgumentParser]) -> list[str]:
    problems = []
    for number, sub, flags in written_commands(text):
        if sub.isupper():  # a placeholder: `vislab COMMAND --help`
            continue
        if sub not in parsers:
            problems.append(f"line {number}: vislab {sub}: no such command")
            continue
        known = {flag for action in parsers[sub]._actions for flag in action.option_strings}
        problems += [f"line {number}: vislab {sub} {flag}: no such flag" for flag in flags if flag not in known]
    return problems


def test_every_flag_written_in_the_docs_exists():
    parsers = _parsers()
    problems, checked = [], 0
    for path in doc_files():
        text = path.read_text()
        checked += sum(len(flags) for _, _, flags in written_commands(text))
        problems += [f"{path.relative_to(ROOT)} {p}" for p in wrong_flags(text, parsers)]
    assert not problems, "\n".join(problems)
    assert checked > 200, f"only {checked} flags found in the docs: the parser of the Markdown is broken"


def test_flag_check_catches_a_made_up_flag_and_command():
    parsers = _parsers()
    text = "\n".join([
        "```bash",
        "vislab train --data photos/ --epochs 3 \\",
        "    --no-such-flag 1 --out runs/x        # a comment --not-a-flag",
        "torchrun --standalone --nproc_per_node 2 -m vislab train --data digits --rotashun 20",
        "```",
        "Inline: `vislab predict RUN x.png --top-k 3 --formatt json`, `vislab trian --data x`,",
        "`vislab COMMAND --help` and `python -m vislab.cli --whatever`.",
    ])
    problems = wrong_flags(text, parsers)
    assert problems == ["line 2: vislab train --no-such-flag: no such flag",
                        "line 4: vislab train --rotashun: no such flag",
                        "line 6: vislab predict --formatt: no such flag",
                        "line 6: vislab trian: no such command"], problems


def test_hand_written_pages_name_every_subcommand():
    text = "\n".join(path.read_text() for path in doc_files())
    named = {sub for line in [text] for _, sub, _ in written_commands(line)}
    missing = [name for name in COMMANDS if name not in named]
    assert not missing, f"no page shows these commands in use: {missing}"


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


WORK_WORDING = re.compile(r"\bsessions?\b|\bissues?\s*#?\d+|(?<![&\w])#\d{2,}\b|\bthe issue's\b|\bbefore (?:this|the) fix\b",
                          re.IGNORECASE)


def test_no_page_speaks_of_work_sessions_or_numbered_issues():
    problems = []
    for path in doc_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = WORK_WORDING.search(line)
            if match:
                problems.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)!r}")
    assert not problems, problems
    for sample in ("as in issue #12", "the second session", "fixed in #123", "the issue's bar"):
        assert WORK_WORDING.search(sample), sample
    assert not WORK_WORDING.search("vislab audit --label-issues finds 12 issues; see the #vislab-train anchor")


# in code, comments and docstrings: "session" is a word of onnxruntime and HTTP, and other projects'
# issue numbers (PyTorch's) may be cited; the project's own work items may not
CODE_WORK_WORDING = re.compile(r"\bthe issue\b|\bissue-\d+\b|\(issue\)|\bwork sessions?\b|\bthis session\b",
                               re.IGNORECASE)


def test_no_code_or_script_page_speaks_of_work_items():
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "examples").glob("*.py"),
             *(ROOT / "tests").glob("*.py"), ROOT / "benchmarks" / "README.md", ROOT / "examples" / "README.md",
             ROOT / "Makefile", ROOT / "mkdocs.yml"]
    problems = []
    for path in files:
        if path.name == "test_docs.py" or not path.is_file():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = CODE_WORK_WORDING.search(line)
            if match:
                problems.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)!r}")
    assert not problems, problems
    for sample in ("as the issue asks", "what the issue-20 bars need", "The targets (issue):"):
        assert CODE_WORK_WORDING.search(sample), sample
    assert not CODE_WORK_WORDING.search("onnxruntime.InferenceSession(path); PyTorch issues #86270 and #118499")


def test_readme_links_point_at_files():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert len(local) >= 10, local
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README.md links to files that are not there: {missing}"
