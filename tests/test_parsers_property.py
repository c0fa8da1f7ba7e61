"""Property-based tests (hypothesis) for the parsers of text formats a user writes: labels CSV,
class-ids, palettes and ``--model-opt``. Whatever the text, each either parses into what it says
or ends in one user error; never another exception, never a class named ""."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vislab.cli import _parse_options
from vislab.core.errors import ConfigError, UserError
from vislab.data.palettes import get_palette
from vislab.data.sources import _natural_key, _read_csv, _refuse_empty_cells, read_class_ids

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
cells = st.text(alphabet=string.ascii_letters + string.digits + " ,\"'\n\r\t;²٣-_.", max_size=12)
texts = st.one_of(st.text(max_size=200), st.lists(st.lists(cells, max_size=4), max_size=6).map(
    lambda rows: "\n".join(",".join(row) for row in rows)))


@SETTINGS
@given(st.lists(st.text(max_size=8), max_size=20))
def test_natural_key_sorts_any_names(names):
    ordered = sorted(names, key=_natural_key)
    assert sorted(ordered) == sorted(names)
    digits = [n for n in ordered if n.isascii() and n.isdigit()]
    assert [int(n) for n in digits] == sorted(int(n) for n in digits)


@SETTINGS
@given(texts)
def test_a_labels_csv_parses_or_is_refused(tmp_path, text):
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    try:
        header, rows = _read_csv(path)
        _refuse_empty_cells(path, rows, header[:2])
    except UserError as exc:
        assert str(path) in str(exc)
        return
    assert all(len(row) == len(header) for row in rows)
    assert all(row[column].strip() for row in rows for column in header[:2])  # no class or file named ""
    sorted({row[header[-1]] for row in rows}, key=_natural_key)


@SETTINGS
@given(texts)
def test_class_ids_parse_or_are_refused(tmp_path, text):
    path = tmp_path / "ids.csv"
    path.write_text(text, encoding="utf-8")
    classes = ["cat", "dog", "0", "1"]
    try:
        mapping = read_class_ids(path, classes)
    except UserError as exc:
        assert str(path) in str(exc)
        return
    assert set(mapping.values()) <= set(classes)
    assert all(key.isdigit() for key in mapping)


@SETTINGS
@given(texts, st.sampled_from([".csv", ".json"]))
def test_a_palette_file_parses_or_is_refused(tmp_path, text, suffix):
    path = tmp_path / f"palette{suffix}"
    path.write_text(text, encoding="utf-8")
    try:
        palette = get_palette(str(path))
    except UserError as exc:
        assert str(path) in str(exc) or path.name in str(exc)
        return
    assert palette.names and all(name.strip() for name in palette.names)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in palette.colors)
    assert len(set(palette.colors)) == len(palette.colors)


@SETTINGS
@given(st.lists(st.text(max_size=20), max_size=4))
def test_model_opt_parses_or_exits_with_a_message(pairs):
    try:
        options = _parse_options(pairs)
    except ConfigError as exc:  # the command prints it as its one-line error
        assert str(exc).startswith("--model-opt")
        return
    assert all(key and "-" not in key for key in options)


def test_a_class_named_empty_is_refused(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,label\na.png,cat\nb.png,\n")
    header, rows = _read_csv(path)
    with pytest.raises(UserError, match="row 3 has an empty 'label' cell; fill it in or delete the row$"):
        _refuse_empty_cells(path, rows, ("file", "label"), label_col="label")
    # other rows with several labels in a cell: a multi-label CSV read as one class per image, said so
    path.write_text("file,labels\na.png,cat dog\nb.png,\nc.png,dog\n")
    header, rows = _read_csv(path)
    with pytest.raises(UserError, match="row 3 has an empty 'labels' cell.*train with --task multilabel"):
        _refuse_empty_cells(path, rows, ("file", "labels"), label_col="labels")
