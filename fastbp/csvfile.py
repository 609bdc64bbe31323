"""CSV files of numbers (and a column of class names), read with Python's :mod:`csv` parser:
a header row or none, a float matrix.

- Quoted fields (``"1.5"``, ``"a,b"`` as a column name), CRLF line ends and a UTF-8 byte order
  mark are handled; blank lines are skipped; surrounding spaces are ignored.
- A trailing comma on every line (an empty last column, in the header too) is dropped.
- ``header=None`` guesses: the first row is a header when one of its cells is neither a number
  nor a missing-value marker; ``header=True`` / ``False`` say so explicitly
  (``--header`` / ``--no-header`` on the command line).
- A missing value (an empty cell, ``NA``, ``NaN``, ``null``, ``?``, ...), a cell that is not a
  finite number, or a row with another number of fields is an error naming the file, the line
  and the column (by name when there is a header). Nothing is guessed silently. A number is
  what :func:`float` reads, less digit separators (``1_000`` is not a number).
- A target column named by a name the header repeats is refused (give its index); so is a
  name for a file without a header.
- ``expected`` (:class:`Columns`, the columns a model was trained on) matches a file with a
  header to them by name: the same names in another order are put back in the training order;
  missing or unexpected names are an error naming them. A file without a header, or a model
  without names, is taken by position.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass

import numpy as np

from .files import FileFormatError

#: cells that mean "no value" (compared case-insensitively)
MISSING = ("", "na", "n/a", "nan", "null", "none", "?", "-")


@dataclass
class Columns:
    """The column names a model was trained on: its ``features`` in order, and its
    ``target`` (None when unknown)."""

    features: list[str]
    target: str | None = None


def read_csv(path, header=None, expected: Columns | None = None
             ) -> tuple[list[str] | None, np.ndarray]:
    """A numeric CSV as ``(header or None, float64 matrix of shape (rows, columns))``, its
    columns matched to ``expected`` by name (see :func:`match_columns`)."""
    path = os.fspath(path)
    names, data = read_table(path, header)
    order = match_columns(path, names, expected)
    return reorder(names, to_matrix(path, data, names), order)


def read_labelled_csv(path, target=-1, header=None, expected: Columns | None = None):
    """``(header or None, X, y)`` from a CSV whose ``target`` column (name or index) may hold
    class names ("cat", "dog") as well as numbers: ``y`` is float64 when every label is a
    number, else an array of strings. The other columns must be numeric; a missing label is an
    error naming its line. The feature columns are matched to ``expected`` by name (see
    :func:`match_columns`); the header returned is in their order, the target's name last."""
    path, by_name = os.fspath(path), isinstance(target, str) and not is_number(target)
    names, data = read_table(path, True if by_name and header is None else header,
                             None if by_name else int(target))
    col = column_index(names, target, len(data[0][1]))
    features = names and names[:col] + names[col + 1:]
    order = match_columns(path, features, expected)
    for line_no, cells in data:
        if is_missing(cells[col]):
            raise FileFormatError(describe_bad_cell(path, line_no, col, cells[col], names))
    labels = [cells[col] for _, cells in data]
    # the label cells read as 0 so that errors count the file's own columns
    numbers = [(n, cells[:col] + ["0"] + cells[col + 1:]) for n, cells in data]
    features, X = reorder(features, np.delete(to_matrix(path, numbers, names), col, axis=1),
                          order)
    numeric = all(is_number(label) for label in labels)
    return features and features + [names[col]], X, np.array(
        labels, dtype=np.float64 if numeric else str)


def match_columns(path, names, expected: Columns | None) -> list[int] | None:
    """The file's column of each of ``expected.features``, in their order (None: keep the
    file's order, also when the file or the model has no names). A name missing or
    unexpected is an error naming them; so are repeated names that cannot be matched."""
    if names is None or expected is None or names == expected.features:
        return None
    wanted = expected.features
    have, want = set(names), set(wanted)
    missing = [n for n in wanted if n not in have]
    unexpected = [n for n in names if n not in want]
    if missing or unexpected:
        raise FileFormatError(f"{path!r}: the columns do not match the model's features "
                              f"{wanted}: missing {missing}, unexpected {unexpected}"
                              + target_hint(expected.target, unexpected))
    if len(set(names)) < len(names) or len(set(wanted)) < len(wanted):
        raise FileFormatError(f"{path!r}: repeated column names "
                              f"{sorted(set(repeated(names) + repeated(wanted)))} "
                              f"cannot be matched by name; order the columns as in training: "
                              f"{wanted}")
    return [names.index(n) for n in wanted]


def target_hint(target, unexpected) -> str:
    """A hint when the training target is among the file's unexpected columns."""
    if target is None or target not in unexpected:
        return ""
    return f" ({target!r} is the training target: pass --target {target} to score against it)"


def repeated(names) -> list[str]:
    """The names that occur more than once."""
    seen = set()
    return [n for n in names if n in seen or seen.add(n)]


def reorder(names, matrix, order):
    """``(names, matrix)`` with their columns in ``order`` (None: as they are)."""
    if order is None:
        return names, matrix
    return [names[j] for j in order], matrix[:, order]


def read_table(path, header=None, label_column=None
               ) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """``(column names or None, [(line number, cells)] of the data rows)``, every row as wide
    as the first. The guess of a header ignores ``label_column`` (an index), which may hold
    names in a data row too."""
    path = os.fspath(path)
    if header not in (None, True, False):
        raise TypeError(f"header must be None (guess), True or False, got {header!r}")
    lines = read_rows(path)
    if not lines:
        raise FileFormatError(f"{path!r} is an empty CSV file")
    lines = drop_trailing_empty_column(lines)
    if header is None:
        first = list(lines[0][1])
        if label_column is not None and -len(first) <= label_column < len(first):
            del first[label_column]
        header = not all(is_number(c) or is_missing(c) for c in first)
    names = [c or f"column {j + 1}" for j, c in enumerate(lines[0][1])] if header else None
    data = lines[1:] if header else lines
    if not data:
        raise FileFormatError(f"{path!r} has a header row but no data rows")
    width = len(lines[0][1])
    for line_no, cells in data:
        if len(cells) != width:
            raise FileFormatError(f"{path!r} line {line_no}: {len(cells)} fields, expected "
                                  f"{width} (as on line {lines[0][0]})")
    return names, data


def column_index(header, target, n_cols) -> int:
    """Resolve a target column given by name or (negative) index."""
    if isinstance(target, str) and not is_number(target):
        if header is None:
            raise ValueError(f"target column {target!r}: a file without a header has no "
                             f"column names; give the target column's index (0 to "
                             f"{n_cols - 1}, or -1 for the last)")
        if target not in header:
            raise ValueError(f"target column {target!r} not found; columns: {header}")
        found = [j for j, name in enumerate(header) if name == target]
        if len(found) > 1:
            raise ValueError(f"target column {target!r} is ambiguous: the header has "
                             f"{len(found)} columns of that name (indices {found}); give the "
                             "target's index instead")
        return found[0]
    index = int(target)
    if not -n_cols <= index < n_cols:
        raise ValueError(f"target column index must be in [{-n_cols}, {n_cols - 1}], got {index}")
    return index % n_cols


def read_rows(path) -> list[tuple[int, list[str]]]:
    """``(line number, stripped cells)`` of every non-blank row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            rows = []
            for cells in reader:
                cells = [c.strip() for c in cells]
                if any(cells):
                    rows.append((reader.line_num, cells))
            return rows
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"no CSV file at {path!r}") from None
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path!r} is not a UTF-8 text (CSV) file: {exc.reason} at "
                              f"byte {exc.start}") from None
    except csv.Error as exc:
        raise FileFormatError(f"{path!r} is not a valid CSV file: {exc}") from None


def drop_trailing_empty_column(lines):
    """Without the last column when every row ends in an empty cell (a trailing comma)."""
    if all(len(cells) > 1 and cells[-1] == "" for _, cells in lines):
        return [(n, cells[:-1]) for n, cells in lines]
    return lines


def to_matrix(path, data, names) -> np.ndarray:
    """The cells as float64, finite; else an error at the first bad cell."""
    try:
        matrix = None if has_digit_separator(data) else np.array(
            [cells for _, cells in data], dtype=np.float64)
    except ValueError:
        matrix = None
    if matrix is not None and np.isfinite(matrix).all():
        return matrix.reshape(len(data), -1)
    for line_no, cells in data:
        for j, cell in enumerate(cells):
            if not is_number(cell) or not math.isfinite(float(cell)):
                raise FileFormatError(describe_bad_cell(path, line_no, j, cell, names))
    return np.array([[float(c) for c in cells] for _, cells in data], dtype=np.float64)


def has_digit_separator(data) -> bool:
    """Whether a cell may hold ``_`` (which NumPy and :func:`float` read as a digit separator):
    one test per row."""
    return any("_" in "".join(cells) for _, cells in data)


def describe_bad_cell(path, line_no, column, cell, names) -> str:
    where = f"{path!r} line {line_no}, column {column + 1}" + (
        f" ({names[column]!r})" if names else "")
    if is_missing(cell):
        return f"{where}: missing value {cell!r}; fill in or drop the row"
    if is_number(cell):
        return f"{where}: {cell!r} is not a finite number"
    return f"{where}: {cell!r} is not a number"


def is_missing(cell: str) -> bool:
    return cell.lower() in MISSING


def is_number(text: str) -> bool:
    """Whether ``text`` parses as a (finite or not) float and is not a missing marker; digit
    separators (``1_000``) make no number."""
    if is_missing(text) or "_" in text:
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True
