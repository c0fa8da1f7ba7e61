"""mkdocs hook: the command-line reference page, generated from vislab's argparse parsers at build time.

``reference/cli.md`` is not a file in the repository: every build imports ``vislab.cli.build_parser``
from this checkout's ``src/`` and writes one section per subcommand (its description, usage and one
table per argument group, with the help, defaults and ranges ``--help`` prints), so the page cannot
drift from the code.
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

from mkdocs.structure.files import File

PAGE = "reference/cli.md"


def _code(text: str) -> str:
    """Inline code as HTML, safe inside a Markdown table cell."""
    return "<code>" + html.escape(text, quote=False).replace("|", "&#124;") + "</code>"


def _escape(text: str) -> str:
    """Help text as Markdown table-cell text: `backticked` parts as code, the rest with no HTML, no table
    breaks, no accidental emphasis or links."""
    parts = " ".join(text.split()).split("`")
    out = []
    for i, part in enumerate(parts):
        if i % 2 and i < len(parts) - 1:  # inside a closed pair of backticks
            out.append(_code(part))
            continue
        part = html.escape(part, quote=False)
        for char, entity in (("\\", "&#92;"), ("|", "&#124;"), ("*", "&#42;"), ("_", "&#95;"), ("[", "&#91;"),
                             ("]", "&#93;"), ("`", "&#96;")):
            part = part.replace(char, entity)
        out.append(part)
    return "".join(out)


def _description(text: str) -> list[str]:
    """A parser's description: prose as paragraphs, indented lines (its examples) as a code block."""
    lines, prose, code = [], [], []

    def flush():
        if prose:
            lines.extend([_escape(" ".join(prose)), ""])
            prose.clear()
        if code:
            lines.extend(["```text", *code, "```", ""])
            code.clear()

    for line in text.splitlines():
        if line.startswith("  ") and line.strip():
            if prose:
                flush()
            code.append(line.strip())
        elif not line.strip():
            flush()
        else:
            if code:
                flush()
            prose.append(line.strip())
    flush()
    return lines


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _invocation(action: argparse.Action, formatter) -> str:
    if not action.option_strings:
        return formatter._metavar_formatter(action, action.dest)(1)[0]
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    args = formatter._format_args(action, action.dest.upper())
    return ", ".join(action.option_strings) + " " + args


def _section(name: str, sub: argparse.ArgumentParser) -> list[str]:
    formatter = sub._get_formatter()
    lines = [f"## vislab {name}", ""]
    if sub.description:
        lines += _description(sub.description)
    usage = sub.format_usage().strip()
    if usage.startswith("usage: "):
        usage = usage[len("usage: "):]
    lines += ["```text", " ".join(usage.split()), "```", ""]
    for group in sub._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = group.title or "options"
        lines += [f"**{_escape(title)}**", "", "| argument | meaning |", "|---|---|"]
        for action in actions:
            meaning = _escape(formatter._expand_help(action)) if action.help else ""
            lines.append(f"| {_code(_invocation(action, formatter))} | {meaning} |")
        lines.append("")
    return lines


def render(parser: argparse.ArgumentParser) -> str:
    """The whole page: the commands' index, then one section per subcommand, in the CLI's order."""
    subs = _subcommands(parser)
    helps = {a.dest: a.help for a in next(a for a in parser._actions
                                          if isinstance(a, argparse._SubParsersAction))._choices_actions}
    lines = ["# Command line", "",
             "This page is generated from vislab's own argument parsers each time the site is built: "
             "it says what `vislab COMMAND --help` says.", "",
             "Usage errors exit with status 2, bad input with status 1 and one line naming the file or flag "
             "and the fix. Every numeric flag states its range.", "",
             "| command | what it does |", "|---|---|"]
    for name in subs:
        lines.append(f"| [`vislab {name}`](#vislab-{name}) | {_escape(helps.get(name) or '')} |")
    lines.append("")
    for name, sub in subs.items():
        lines += _section(name, sub)
    return "\n".join(lines) + "\n"


def _build_parser(config) -> argparse.ArgumentParser:
    src = Path(config.config_file_path).resolve().parent / "src"
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))  # this checkout's code, not whichever vislab is installed
    from vislab.cli import build_parser

    return build_parser()


def on_files(files, config):
    files.append(File.generated(config, PAGE, content=render(_build_parser(config))))
    return files

