"""Hostile CSV files for the ``csv`` and ``bimcv`` datasets: parsed right, or refused in one sentence naming rows."""

import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from ttlx.cli import app
from ttlx.data.datasets.bimcv import BIMCV
from ttlx.data.datasets.csvlist import CSV_LIST
from ttlx.data.prepare import prepare_dataset
from ttlx.data.store import load_prepared
from ttlx.errors import DataError


def _scan(root, table, **options):
    return CSV_LIST.scan(root, csv=table, **options)


def _error(spec, root, table, **options) -> str:
    with pytest.raises(DataError) as err:
        spec.scan(root, csv=table, **options)
    return str(err.value)


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    return folder


def test_missing_path_or_label_column_names_what_the_file_has(root):
    table = root / "labels.csv"
    table.write_text("path,group\na.png,p1\n")
    assert _error(CSV_LIST, root, table) == (
        f"{table} has no label column; name one of its columns label or class or target or y (it has: path, group)."
    )
    table.write_text("name,label\na.png,x\n")
    assert _error(CSV_LIST, root, table) == (
        f"{table} has no image path column; name one of its columns path or image_path or file or filename "
        "(it has: name, label)."
    )
    table.write_text("")
    assert "has no image path column" in _error(CSV_LIST, root, table) and "(it has: no header)." in _error(
        CSV_LIST, root, table
    )
    table.write_text("path,label\n\n")
    assert _error(CSV_LIST, root, table) == (
        f"{table} lists no images; add a row of path,label per image below its header."
    )


def test_extra_columns_blank_rows_and_spaces_are_ignored_and_rows_keep_their_numbers(root):
    table = root / "labels.csv"
    table.write_text(
        "path, label ,notes,\n"  # row 1: spaces around names, an unnamed trailing column
        "a.png, x ,first,\n"  # row 2
        "\n"  # row 3: blank
        ",,,\n"  # row 4: empty cells, as spreadsheets save an empty row
        "b.png,y\n"  # row 5: missing trailing cells
        "c.png,y,third,,extra,cells\n"  # row 6: more cells than the header
        "d.png,zzz\n"  # row 7
    )
    assert _error(CSV_LIST, root, table, classes="x,y") == (
        f"{table} has labels outside the class list of 'csv' (x, y) on rows 7; fix those rows."
    )
    table.write_text(table.read_text().replace("zzz", "x"))
    catalog = _scan(root, table)
    assert catalog.classes == ("x", "y")
    assert [(e.id, e.label, e.image) for e in catalog.examples] == [
        ("a.png", 0, root / "a.png"),
        ("b.png", 1, root / "b.png"),
        ("c.png", 1, root / "c.png"),
        ("d.png", 0, root / "d.png"),
    ]


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-8-sig", ","), ("utf-8-sig", "\t"), ("utf-16", "\t"), ("utf-8", ";")],
    ids=["utf8-bom", "utf8-bom-tabs", "excel-unicode-text", "semicolons"],
)
def test_byte_order_marks_and_separators(root, encoding, delimiter):
    table = root / "labels.csv"
    text = f"path{delimiter}label\r\nscan é.png{delimiter}benign\r\nscan_2.png{delimiter}malignant\r\n"
    table.write_bytes(text.encode(encoding))
    if delimiter == ";":  # not a separator ttlx reads: the header is one column, named as it is
        assert _error(CSV_LIST, root, table).endswith("(it has: path;label).")
        return
    catalog = _scan(root, table)
    assert [e.id for e in catalog.examples] == ["scan é.png", "scan_2.png"]
    assert catalog.classes == ("benign", "malignant")


def test_quoted_commas_quotes_and_newlines_in_paths_load_end_to_end(root, tmp_path):
    names = ["scan, left.png", 'the "good" one.png', "two\nlines.png", " padded.png"]
    rows = [[name, "ab"[i % 2]] for i, name in enumerate(names)]
    for i in range(8):  # enough images for the 64/16/20 split
        rows.append([f"plain{i}.png", "ab"[i % 2]])
    for path, _ in rows:
        Image.new("RGB", (8, 8), (len(path) * 9 % 256, 80, 120)).save(root / path.strip(), format="PNG")
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["path", "label"], *rows])
    assert 'scan, left.png"' in table.read_text()  # the writer did quote them
    prepare_dataset("csv", tmp_path / "data", root, csv=table)
    ids = set(load_prepared("csv", tmp_path / "data").position)
    assert {"scan, left.png", 'the "good" one.png', "two\nlines.png", "padded.png"} <= ids
    assert len(ids) == 12


def test_non_utf8_bytes_name_the_line_and_ask_for_utf8(root):
    table = root / "labels.csv"
    table.write_bytes(b"path,label\na.png,x\nb\xe9b\xe9.png,y\n")  # Latin-1 e-acute on line 3, byte 20
    assert _error(CSV_LIST, root, table) == (
        f"{table} is not UTF-8 text: line 3 holds the byte 0xe9 (byte 20 of the file); "
        "save it as UTF-8 (Excel: CSV UTF-8)."
    )
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())  # a BOM before it moves the byte, not the line
    assert "line 3 holds the byte 0xe9 (byte 23 of the file)" in _error(CSV_LIST, root, table)
    result = CliRunner().invoke(
        app, ["prepare", "csv", "--manual-dir", str(root), "--csv", str(table), "--data-dir", str(root.parent / "d")]
    )
    assert result.exit_code == 2 and "is not UTF-8 text: line 3 holds the byte 0xe9" in result.output


def test_labels_sort_as_numbers_only_when_all_are_ascii_integers(root):
    table = root / "labels.csv"
    table.write_text("path,label\na.png,10\nb.png,-1\nc.png,2\n")
    assert _scan(root, table).classes == ("-1", "2", "10")
    table.write_text("path,label\na.png,10\nb.png,\u00b2\nc.png,--5\n")  # str.isdigit() is True for "²"
    assert _scan(root, table).classes == ("--5", "10", "\u00b2")


def test_an_unclosed_quote_names_its_row(root):
    table = root / "labels.csv"
    table.write_text('path,label\na.png,x\n"b.png,y\nc.png,x\n')
    assert _error(CSV_LIST, root, table) == (
        f"{table} is not a valid CSV file at row 3 (unexpected end of data); "
        "fix that row (an unclosed quote is the usual cause)."
    )


def test_duplicate_ids_and_images_are_refused_with_their_rows(root):
    table = root / "labels.csv"
    table.write_text("path,label,id\na.png,x,one\nb.png,y,two\nc.png,x,one\nd.png,y,two\ne.png,x,one\n")
    assert _error(CSV_LIST, root, table) == (
        f"Dataset 'csv' has duplicate ids: one, two; ids must be unique "
        f"({table}: one on rows 2, 4, 6; two on rows 3, 5)."
    )
    table.write_text("path,label,id\na.png,x,1\nsub/../a.png,y,2\nb.png,x,3\n")  # one file, two spellings
    assert _error(CSV_LIST, root, table) == (
        f"Dataset 'csv' references the same image more than once: {root / 'a.png'}; list each image once "
        f"({table}: {root / 'a.png'} on rows 2, 3)."
    )


ESCAPES = ["../../etc/passwd", "/etc/passwd", "sub/../../outside.png", "..", "."]


@pytest.mark.parametrize("spec", [CSV_LIST, BIMCV], ids=["csv", "bimcv"])
def test_paths_that_leave_the_image_root_are_refused_with_their_rows(root, spec):
    image_root = root / "crop" if spec is BIMCV else root  # BIMCV's images live under crop/
    image_root.mkdir(exist_ok=True)
    table = root / "labels.csv"
    body = "".join(f"{p},1\n" for p in ["fine.png", *ESCAPES, f"{image_root}/absolute_inside.png", "a/../b.png"])
    table.write_text("path,label\n" + body)
    rows = ", ".join(f"{n} ({p})" for n, p in enumerate(ESCAPES, start=3))
    assert _error(spec, root, table) == (
        f"{table} lists images outside the image root {image_root} on rows {rows}; "
        "give paths relative to that folder that stay inside it."
    )
    table.write_text("path,label\n,1\nok.png,0\n,0\n")
    assert _error(spec, root, table) == f"{table} has no image path on rows 2, 4; fill them in or remove those rows."


def test_a_symlink_inside_the_root_is_followed_as_documented(root, tmp_path):
    (tmp_path / "elsewhere.png").write_bytes(b"")
    (root / "link.png").symlink_to(tmp_path / "elsewhere.png")
    table = root / "labels.csv"
    table.write_text("path,label\nlink.png,x\n")
    assert _scan(root, table).examples[0].image == root / "link.png"


def test_bimcv_reads_a_bom_header_and_its_label_spellings(root):
    (root / "crop").mkdir()
    table = root / "bimcv.csv"
    table.write_bytes("\ufeffpath,label\nsub-S001_ses-1.png,COVID\nsub-S002_ses-1.png,0\n".encode())
    catalog = BIMCV.scan(root)
    assert [(e.label, e.group, e.image) for e in catalog.examples] == [
        (1, "sub-S001", root / "crop" / "sub-S001_ses-1.png"),
        (0, "sub-S002", root / "crop" / "sub-S002_ses-1.png"),
    ]


# --- hypothesis: any cells (commas, quotes, newlines, unicode) come back exactly as written ----------------

CELL = (
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=10)
    .map(str.strip)  # ttlx strips cells, so only stripped cells can come back unchanged
    .filter(bool)
)
PART = CELL.filter(lambda s: "/" not in s and s not in (".", ".."))
PATH = st.lists(PART, min_size=1, max_size=3).map("/".join)
ROWS = st.lists(st.tuples(PATH, CELL, CELL | st.just("")), min_size=1, max_size=8, unique_by=lambda r: r[0])
# The csv writer quotes a cell holding \r only when \r is in its line terminator: pair "\n" with QUOTE_ALL.
STYLE = st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL), ("\r\n", csv.QUOTE_ALL)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ROWS, st.sampled_from([",", "\t"]), st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]), STYLE)
def test_paths_labels_and_groups_round_trip(tmp_path, rows, delimiter, encoding, style):
    terminator, quoting = style
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=terminator, quoting=quoting)
    writer.writerows([["path", "label", "group"], *rows])
    table = tmp_path / "labels.csv"
    table.write_bytes(buffer.getvalue().encode(encoding))
    catalog = _scan(tmp_path, table)
    assert len(catalog.examples) == len(rows)
    for (path, label, group), example in zip(rows, catalog.examples, strict=True):
        assert example.id == path
        assert example.image == tmp_path / path
        assert catalog.classes[example.label] == label
        assert example.group == group
