"""One self-contained HTML page for a run folder.

Every image is embedded as a base64 data URI and the CSS is inline, so the file
can be mailed or opened offline; there is no JavaScript. Each section is built
from one run-folder file; a missing file means a missing section, and a broken
file means a short note in its place, never a crash. A figure an evaluation drew (its
metrics file lists them under ``figures``) that has since gone missing is named in a
warning and a note at the top of the page, with the command that draws it again.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import shlex
import warnings
from pathlib import Path
from typing import Callable, Iterable

import yaml

from vislab.core.errors import ConfigError
from vislab.core.files import evaluation_files, read_csv_rows, read_json, reading, run_folder_error
from vislab.tasks import Task, get_task

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}
TRAINING_FIGURES = ["curves.png"]

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:1.6em}
header p{margin:4px 0 0;color:#c9d1d9}
nav{padding:8px 32px;background:#fff;border-bottom:1px solid #d0d7de}
nav a{margin-right:14px;color:#0969da;text-decoration:none;font-size:.95em}
main{padding:8px 32px 40px;max-width:1400px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 20px 18px;margin:18px 0}
h2{border-bottom:1px solid #d0d7de;padding-bottom:6px;font-size:1.3em}
h3{font-size:1.05em;margin-top:18px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:right}
th{background:#f6f8fa}
td.text,th.text{text-align:left}
tr:nth-child(even) td{background:#fbfcfd}
details summary{cursor:pointer;color:#0969da}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:10px;overflow-x:auto;font-size:.85em}
figure{margin:10px 0 18px}
figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:.85em}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #d0d7de;border-radius:6px;padding:10px 16px;min-width:120px;background:#f6f8fa}
.card .value{font-size:1.5em;font-weight:600}
.card .label{color:#57606a;font-size:.85em}
.warn{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:6px 12px;margin:6px 0}
.note{color:#57606a;font-size:.9em}
"""


def build_report(run_dir) -> Path:
    """Write ``run_dir/report.html`` from whatever the run folder holds and return its path.

    Sections (each only when its files exist): summary, model (``model.json``), dataset audit
    (``audit.json``, ``plots/audit_*.png``), training (``plots/curves.png``, ``history.csv``),
    metrics (``metrics.json``), evaluation figures, misclassified examples (``misclassified.csv``
    and grids), explanations (``plots/explain/``), other figures under ``plots/`` (another split's or
    data set's, ``plots/<name>/``), bad files, and last the config (``config.yaml``), folded in a
    ``<details>`` element.

    A figure that ``metrics.json`` or a ``metrics_<name>.json`` lists as drawn but that is no longer
    in the folder is named in a :class:`UserWarning` (one per evaluation; the command line prints it as
    ``vislab report: warning: ...``) and in a "Missing figures" note, with the ``vislab evaluate``
    command that draws it again. A figure the run never drew is not missing.

    Example:
        >>> import tempfile, json, pathlib
        >>> run = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (run / "config.yaml").write_text("seed: 0")
        >>> _ = (run / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "loss": 0.3}))
        >>> page = build_report(run).read_text()
        >>> "Metrics" in page and "<script" not in page
        True
    """
    from vislab.core.background import wait

    wait()  # the figures still being drawn in a helper interpreter: the page embeds them
    run_dir = Path(run_dir)
    error = run_folder_error(run_dir)
    if error is not None:
        raise error
    report = _Report(run_dir)
    task = report.task
    for files, command in report.missing:
        them = "it" if len(files) == 1 else "them"
        warnings.warn(f"{', '.join(files)}: drawn by the evaluation but no longer in {run_dir}, so report.html "
                      f"lacks {them}; `{command}` draws {them} again", UserWarning, stacklevel=2)
    sections = [
        ("summary", "Summary", report.summary),
        ("missing", "Missing figures", report.missing_figures),
        ("model", "Model", report.model),
        ("audit", "Dataset audit", report.audit),
        ("label-issues", "Label issues", report.label_issues),
        ("training", "Training", report.training),
        ("metrics", "Metrics", report.metrics),
        *[(a, t, (lambda b=b: b(report))) for a, t, b in task.report_sections()],
        ("explanations", "Explanations", report.explanations),
        ("other", "Other figures", report.other_figures),
        ("bad-files", "Bad files", report.bad_files),
        # last and folded: ~60 lines of settings would push the results down the page
        ("config", "Configuration", report.config),
    ]
    bodies = []
    for anchor, title, build in sections:
        body = _safely(build)
        if body:
            bodies.append((anchor, title, body))
    nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t, _ in bodies)
    content = "\n".join(f'<section id="{a}"><h2>{html.escape(t)}</h2>\n{b}\n</section>' for a, t, b in bodies)
    if not bodies:
        content = '<section><p class="note">This run folder holds nothing to report yet (no config, metrics or figures).</p></section>'
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vislab report: {html.escape(run_dir.resolve().name)}</title>
<link rel="icon" href="data:,">
<style>{CSS}</style>
</head>
<body>
<header><h1>vislab report: {html.escape(run_dir.resolve().name)}</h1>
<p>{html.escape(str(run_dir.resolve()))} &middot; generated {stamp}</p></header>
<nav>{nav}</nav>
<main>
{content}
</main>
</body>
</html>
"""
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


class _Report:
    """Section builders; each returns HTML or "" when its files are absent."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.plots = run_dir / "plots"
        self.shown: set[Path] = set()
        spec = _read_json(run_dir / "model.json")
        try:
            self.task = get_task(spec.get("task") if isinstance(spec, dict) else None)
        except ConfigError:  # a task this process does not know: the generic sections
            self.task = Task()
        self.missing = _missing_figures(run_dir)

    # helpers the tasks' sections use
    def figure(self, path: Path) -> str:
        return self._figure(path)

    def table(self, header, rows, text_columns=frozenset({0}), formatted: bool = False) -> str:
        """An HTML table; numbers read from a CSV are shortened to 4 significant digits unless the
        cells come ``formatted`` already."""
        shown = rows if formatted else [[_num_text(v) for v in r] for r in rows]
        return _table(header, shown, text_columns=set(text_columns))

    @staticmethod
    def read_csv(path: Path):
        return _read_csv(path)

    # --------------------------------------------------------------- sections

    def summary(self) -> str:
        metrics = _read_json(self.run_dir / "metrics.json")
        if not isinstance(metrics, dict):
            return ""
        items = "".join(
            f'<div class="card"><div class="value">{html.escape(v)}</div><div class="label">{html.escape(k)}</div></div>'
            for k, v in self.task.summary_cards(metrics)
        )
        return f'<div class="cards">{items}</div>'

    def missing_figures(self) -> str:
        return "\n".join(
            f'<p class="warn">{", ".join(f"<code>{html.escape(f)}</code>" for f in files)}: drawn by the evaluation, '
            f'no longer in the run folder. <code>{html.escape(command)}</code> draws '
            f'{"it" if len(files) == 1 else "them"} again.</p>'
            for files, command in self.missing)

    def config(self) -> str:
        path = self.run_dir / "config.yaml"
        if not path.is_file():
            return ""
        with reading(path, "a run's config (YAML)", "restore the config.yaml the run wrote"):
            text = path.read_bytes().decode("utf-8", errors="replace")
        try:
            data = yaml.safe_load(text)
            shown = yaml.safe_dump(data, sort_keys=False, default_flow_style=False) if data is not None else text
            lines = len(shown.splitlines())
            return (f"<details><summary>config.yaml: the resolved settings, {lines} lines (enough to repeat the "
                    f"run)</summary>\n<pre>{html.escape(shown)}</pre></details>")
        except yaml.YAMLError as exc:
            return f'<p class="warn">config.yaml is not valid YAML ({html.escape(str(exc))}); shown as written:</p><pre>{html.escape(text)}</pre>'

    def model(self) -> str:
        spec = _read_json(self.run_dir / "model.json")
        if not isinstance(spec, dict):
            return ""
        scalars = [(k, v) for k, v in spec.items() if not isinstance(v, (dict, list))]
        parts = [_kv_table(scalars)] if scalars else []
        for key, value in spec.items():
            if isinstance(value, dict) and value:
                parts.append(f"<h3>{html.escape(key)}</h3>" + _kv_table(value.items()))
            elif isinstance(value, list) and value:
                shown = ", ".join(str(v) for v in value[:50]) + (f" … ({len(value)} in all)" if len(value) > 50 else "")
                parts.append(f"<h3>{html.escape(key)}</h3><p>{html.escape(shown)}</p>")
        return "\n".join(parts)

    def audit(self) -> str:
        audit = _read_json(self.run_dir / "audit.json")
        figures = sorted(self.plots.glob("audit_*.png")) if self.plots.is_dir() else []
        if not isinstance(audit, dict) and not figures:
            return ""
        parts = []
        if isinstance(audit, dict):
            parts += [f'<p class="warn">{html.escape(str(w))}</p>' for w in audit.get("warnings", [])]
            if audit.get("dataset"):
                parts.append(f"<p>Dataset <b>{html.escape(str(audit['dataset']))}</b>, {audit.get('num_classes', '?')} classes.</p>")
            balance = audit.get("class_balance") or {}
            table = balance.get("table") or []
            if table:
                splits = [k for k in table[0] if k != "class"]
                rows = [[r.get("class")] + [r.get(s) for s in splits] for r in table]
                rows.append(["total"] + [(balance.get("totals") or {}).get(s) for s in splits])
                ratios = balance.get("imbalance_ratio") or {}
                rows.append(["imbalance ratio (max/min)"] + [_num(ratios.get(s)) for s in splits])
                parts.append("<h3>Class balance</h3>" + _table(["class"] + splits, rows))
            geometry = audit.get("geometry") or {}
            if geometry.get("images_measured"):
                items = [("images measured", geometry["images_measured"])]
                for key in ("width", "height", "aspect_ratio"):
                    stats = geometry.get(key) or {}
                    items.append((key.replace("_", " "), f"{_num(stats.get('min'))} – {_num(stats.get('max'))} (mean {_num(stats.get('mean'))})"))
                for key in ("distinct_sizes", "common_sizes", "modes", "channels", "formats"):
                    if key in geometry:
                        items.append((key.replace("_", " "), _inline(geometry[key])))
                parts.append("<h3>Image geometry and formats</h3>" + _kv_table(items))
            colour = audit.get("dominant_colour") or {}
            per_class = colour.get("mean_dominant_colour_per_class") or {}
            if per_class:
                rows = [
                    [name, f'<span style="display:inline-block;width:28px;height:14px;border:1px solid #888;background:rgb({int(r)},{int(g)},{int(b)})"></span> ({int(r)}, {int(g)}, {int(b)})']
                    for name, (r, g, b) in per_class.items()
                ]
                parts.append(
                    f"<h3>Dominant colour</h3><p class=\"note\">{html.escape(str(colour.get('method', '')))}; "
                    f"{colour.get('images_sampled', '?')} images sampled.</p>" + _table(["class", "mean dominant colour"], rows, raw_columns={1}, text_columns={0, 1})
                )
            duplicates = audit.get("duplicates") or {}
            if duplicates:
                within = duplicates.get("within_split") or {}
                items = [("images hashed", duplicates.get("images_hashed"))]
                items += [(f"duplicates within {s}", f"{v.get('extra_copies', 0)} extra copies in {v.get('groups', 0)} groups") for s, v in within.items()]
                across = duplicates.get("across_splits") or {}
                items.append(("across splits (leakage)", f"{across.get('groups', 0)} images {_inline(across.get('pairs') or {})}"))
                items.append(("label conflicts", duplicates.get("label_conflicts", 0)))
                near = duplicates.get("near") or {}
                if near:
                    items.append(("near-duplicates across splits (perceptual hash)",
                                  f"{near.get('pairs', 0)} pairs {_inline(near.get('by_split_pair') or {})}"
                                  if near.get("checked") else f"not checked: {near.get('reason')}"))
                parts.append("<h3>Exact duplicates</h3>" + _kv_table(items))
                examples = duplicates.get("examples") or []
                if examples:
                    rows = [["<br>".join(html.escape(str(s)) for s in e.get("sources", [])), html.escape(", ".join(e.get("splits", []))), html.escape(", ".join(map(str, e.get("labels", []))))] for e in examples[:20]]
                    parts.append(_table(["files", "splits", "labels"], rows, raw_columns={0, 1, 2}, text_columns={0, 1, 2}))
        parts += [self._figure(p) for p in figures]
        return "\n".join(parts)

    def label_issues(self) -> str:
        """audit.json's ``label_issues`` section: what was run, the top rows of label_issues.csv, the grid."""
        audit = _read_json(self.run_dir / "audit.json")
        issues = audit.get("label_issues") if isinstance(audit, dict) else None
        if not isinstance(issues, dict):
            return ""
        items = [("model", issues.get("model")), ("method", issues.get("method")),
                 ("ranked by", f"{issues.get('rank_by')} (lower score: more likely wrong); flagged by "
                               f"{issues.get('filter_by')}"),
                 ("images checked", issues.get("images_checked")),
                 ("flagged", f"{issues.get('issues')} ({_pct(issues.get('issue_rate'))})"),
                 ("out-of-fold accuracy", _pct(issues.get("out_of_fold_accuracy"))),
                 ("flagged per given class", _inline(issues.get("per_class") or {}))]
        parts = [_kv_table(items)]
        rows = [[r.get("file"), r.get("given"), r.get("suggested"), _num(r.get("score")), r.get("split")]
                for r in issues.get("top") or []]
        if rows:
            parts.append(f'<p class="note">The {len(rows)} most likely of {issues.get("issues")}; all of them are in '
                         f'{html.escape(str(issues.get("csv")))}. Train without them with <code>vislab train '
                         "--exclude label_issues.csv</code>, or with the suggested labels with <code>--relabel "
                         "label_issues.csv</code>.</p>")
            parts.append(_table(["file", "given", "suggested", "score", "split"], rows, text_columns={0, 1, 2, 4}))
        figure = issues.get("figure")
        if figure and (self.run_dir / figure).is_file():
            parts.append(self._figure(self.run_dir / figure))
        return "\n".join(parts)

    def training(self) -> str:
        parts = [self._figure(self.plots / name) for name in TRAINING_FIGURES if (self.plots / name).is_file()]
        history = self.run_dir / "history.csv"
        if history.is_file():
            header, rows = _read_csv(history)
            if header:
                shown = rows if len(rows) <= 200 else rows[-200:]
                note = f'<p class="note">last 200 of {len(rows)} epochs</p>' if len(rows) > 200 else ""
                total = _sum_column(header, rows, "seconds")
                if total is not None:
                    note += f'<p>{len(rows)} epochs, {total:.1f} s of training.</p>'
                parts.append("<h3>History</h3>" + note + _table(header, [[_num_text(v) for v in r] for r in shown]))
        return "\n".join(parts)

    def metrics(self) -> str:
        metrics = _read_json(self.run_dir / "metrics.json")
        if not isinstance(metrics, dict):
            return ""
        parts = [f'<p class="warn">{html.escape(str(n))}</p>' for n in metrics.get("notes", [])]
        parts.append(_kv_table(self.task.report_metrics(metrics)))  # the task says which numbers and how
        parts += self.task.report_tables(self, metrics)
        return "\n".join(parts)

    def explanations(self) -> str:
        folder = self.plots / "explain"
        if not folder.is_dir():
            return ""
        return "\n".join(self._figure(p) for p in _images(folder.rglob("*")))

    def other_figures(self) -> str:
        if not self.plots.is_dir():
            return ""
        explain = self.plots / "explain"
        rest = [p for p in _images(self.plots.rglob("*")) if p not in self.shown and explain not in p.parents]
        return "\n".join(self._figure(p) for p in rest)

    def bad_files(self) -> str:
        entries: dict[str, str] = {}
        path = self.run_dir / "bad_files.csv"
        if path.is_file():
            header, rows = _read_csv(path)
            for row in rows:
                if row:
                    entries[row[0]] = row[1] if len(row) > 1 else ""
        audit = _read_json(self.run_dir / "audit.json")
        if isinstance(audit, dict):
            for entry in audit.get("bad_files") or []:
                entries.setdefault(str(entry.get("path")), str(entry.get("reason", "")))
        if not entries:
            return ""
        rows = [[p, r] for p, r in list(entries.items())[:500]]
        more = f'<p class="note">first 500 of {len(entries)}</p>' if len(entries) > 500 else ""
        return f"<p>{len(entries)} file(s) could not be used and were skipped.</p>{more}" + _table(["file", "reason"], rows, text_columns={0, 1})

    # --------------------------------------------------------------- pieces

    def _figure(self, path: Path) -> str:
        self.shown.add(path)
        mime = IMAGE_TYPES.get(path.suffix.lower())
        if mime is None or not path.is_file():
            return ""
        with reading(path, "a figure", "draw it again with `vislab evaluate`"):
            data = base64.b64encode(path.read_bytes()).decode("ascii")
        caption = html.escape(str(path.relative_to(self.run_dir)))
        return f'<figure><img src="data:{mime};base64,{data}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


# ----------------------------------------------------------------------------- helpers


def _missing_figures(run_dir: Path) -> list[tuple[list[str], str]]:
    """([missing figures], the command that draws them again) for each evaluation whose metrics file
    (``metrics.json``, ``metrics_<name>.json``) lists figures under ``figures`` that are not in the folder."""
    found = []
    for name, path in evaluation_files(run_dir).items():
        try:
            metrics = _read_json(path)
        except Exception:  # noqa: BLE001 - a damaged metrics file is the metrics section's note, not this one's
            continue
        figures = metrics.get("figures") if isinstance(metrics, dict) else None
        if not isinstance(figures, list):
            continue
        missing = [f for f in figures if isinstance(f, str) and f and not (run_dir / f).is_file()]
        if missing:
            found.append((missing, _evaluate_command(run_dir, name, metrics)))
    return found


def _evaluate_command(run_dir: Path, name: str, metrics: dict) -> str:
    """The ``vislab evaluate`` command that writes ``metrics_<name>.json`` (``metrics.json`` for ``""``) again."""
    words = ["vislab", "evaluate", str(run_dir)]
    if name:
        from vislab.evaluate.runner import evaluation_name

        split = str(metrics.get("split") or "test")
        threshold = metrics.get("threshold")
        threshold = threshold if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) else None
        if name != evaluation_name(split, None, threshold) and metrics.get("data"):
            words += ["--data", str(metrics["data"])]
        if split != "test":
            words += ["--split", split]
        if threshold is not None:
            words += ["--threshold", f"{threshold:g}"]
    return shlex.join(words)


def _safely(build: Callable[[], str]) -> str:
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - one unreadable file must not cost the whole report
        from vislab.core.errors import UserError

        # a damaged file's message names the file and the fix; only a bug's needs its type to be found
        reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        return f'<p class="warn">This section could not be built: {html.escape(reason)}</p>'


def _images(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_TYPES)


def _read_json(path: Path):
    if not path.is_file():
        return None
    return read_json(path, "a JSON file of the run", "write it again with the command that made it")


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = read_csv_rows(path, "a CSV file of the run", "write it again with the command that made it")
    return (rows[0], rows[1:]) if rows else ([], [])


def _sum_column(header, rows, name) -> float | None:
    if name not in header:
        return None
    column = header.index(name)
    try:
        return sum(float(r[column]) for r in rows if len(r) > column and r[column] != "")
    except ValueError:
        return None


def _table(header, rows, raw_columns: set[int] = frozenset(), text_columns: set[int] = frozenset({0})) -> str:
    """HTML table; cells are escaped unless their column is in ``raw_columns`` (already HTML)."""

    def cell(tag, i, value):
        css = ' class="text"' if i in text_columns else ""
        shown = str(value) if i in raw_columns else html.escape("n/a" if value is None else str(value))
        return f"<{tag}{css}>{shown}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _kv_table(items) -> str:
    rows = [[k, _num(v) if isinstance(v, float) else ("n/a" if v is None else v)] for k, v in items]
    return _table(["", ""], rows, text_columns={0, 1}).replace("<thead><tr><th class=\"text\"></th><th class=\"text\"></th></tr></thead>", "")


def _inline(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def _num(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    return str(value)


def _num_text(value: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return value if number.is_integer() and "." not in value else f"{number:.4g}"


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.2%}"
