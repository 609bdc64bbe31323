"""Class 3 and 4: readers never guess silently and never crash; model files are validated
against their arrays before anything is allocated. Properties over generated and mutated
CSV, data and model files: each gives the right answer or one clear error, never another
exception."""

import io
import re
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastbp
from edits import rewrite
from fastbp import csvfile, data, io as model_io
from fastbp.files import FileFormatError

CLEAR_ERRORS = (FileFormatError, ValueError, OSError)
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- CSV -----------------------------------------------------------------------------------


def cell_text(value, quote):
    text = repr(float(value))
    return f'"{text}"' if quote else text


@FAST
@given(st.integers(1, 6), st.integers(1, 5), st.data())
def test_csv_round_trip_whatever_the_formatting(tmp_path, n_rows, n_cols, draw):
    values = np.array(draw.draw(st.lists(
        st.floats(-1e6, 1e6, allow_nan=False), min_size=n_rows * n_cols,
        max_size=n_rows * n_cols))).reshape(n_rows, n_cols)
    bom, header, trailing, crlf, quote, blank, spaces = (
        draw.draw(st.booleans()) for _ in range(7))
    end = "\r\n" if crlf else "\n"
    sep = ", " if spaces else ","
    lines = [sep.join(f'"col {j}"' if quote else f"c{j}" for j in range(n_cols))] if header \
        else []
    lines += [sep.join(cell_text(v, quote) for v in row) for row in values]
    if trailing:
        lines = [line + "," for line in lines]
    text = ("\ufeff" if bom else "") + end.join(lines) + end + (end if blank else "")
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode("utf-8"))
    names, matrix = csvfile.read_csv(path)
    np.testing.assert_array_equal(matrix, values)
    assert (names is not None) == header


@pytest.mark.parametrize("content,message", [
    ("1,NA,3\n4,5,6\n", r"line 1, column 2: missing value 'NA'"),
    ("a,b,c\n1,2,3\n4,,6\n", r"line 3, column 2 \('b'\): missing value ''"),
    ("a,b\n1,x\n", r"line 2, column 2 \('b'\): 'x' is not a number"),
    ("a,b\n1,inf\n", r"'inf' is not a finite number"),
    ("a,b\n1,2\n3\n", r"line 3: 1 fields, expected 2"),
    ("a,b\n", "has a header row but no data rows"),
    ("", "is an empty CSV file"),
    ("\n\n", "is an empty CSV file"),
])
def test_csv_problems_are_reported_by_line_and_column(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(FileFormatError, match=message):
        csvfile.read_csv(path)


def test_csv_first_row_kept_with_bom_trailing_comma_and_explicit_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbf1,2,3,\n4,5,6,\n")
    assert csvfile.read_csv(path)[1].shape == (2, 3)
    assert csvfile.read_csv(path, header=True)[0] == ["1", "2", "3"]
    path.write_text("x,y\n1,2\n")
    with pytest.raises(FileFormatError, match="'x' is not a number"):
        csvfile.read_csv(path, header=False)


def test_a_one_column_csv_cannot_train(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("a\n1\n2\n")
    with pytest.raises(FileFormatError, match="at least one feature column"):
        data.load_csv(path)


def test_a_binary_file_is_not_a_csv(tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes(b"\xff\xfe\x00\x01" * 10)
    with pytest.raises(FileFormatError, match="not a UTF-8 text"):
        csvfile.read_csv(path)


@FAST
@given(st.binary(max_size=200), st.integers(0, 60))
def test_mutated_csv_parses_or_fails_clearly(tmp_path, junk, where):
    good = b"a,b,c\n1,2,3\n4,5,6\n7,8,9\n"
    path = tmp_path / "m.csv"
    path.write_bytes(good[:where] + junk + good[where:])
    try:
        names, matrix = csvfile.read_csv(path)
    except CLEAR_ERRORS:
        return
    assert matrix.ndim == 2 and np.isfinite(matrix).all()
    assert names is None or len(names) == matrix.shape[1]


@FAST
@given(st.binary(max_size=400))
def test_any_bytes_as_an_npz_data_file_fail_clearly(tmp_path, payload):
    path = tmp_path / "d.npz"
    path.write_bytes(payload)
    with pytest.raises(CLEAR_ERRORS):
        data.load_npz(path)


def test_a_pickled_npz_is_refused_without_numpy_advice(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, X=np.array([1, None], dtype=object), y=np.zeros(2))
    with pytest.raises(FileFormatError) as info:
        data.load_npz(path)
    assert "allow_pickle" not in str(info.value)


# -- model files ---------------------------------------------------------------------------

def saved_model(tmp_path, **kwargs):
    kwargs = {"sizes": [5, 7, 3], "backend": "numpy", "seed": 0, **kwargs}
    net = fastbp.MLP(**kwargs)
    X = np.random.default_rng(0).normal(size=(30, kwargs["sizes"][0]))
    net.fit(X, np.arange(30) % 3, epochs=1, verbose=0) if kwargs.get("preprocess") else None
    path = tmp_path / "m.npz"
    net.save(path)
    return net, path


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["config"].update(sizes=[5, 20000, 20000, 3]), "arrays do not match"),
    (lambda m: m["config"].update(sizes=[5, 8, 3]), r"'W_1' has shape \(5, 7\)"),
    (lambda m: m["config"].update(bogus=1), r"unknown config key\(s\) \['bogus'\]"),
    (lambda m: m.update(version="2"), "format version must be a positive integer"),
    (lambda m: m.update(version=99), "newer fastbp"),
    (lambda m: m.update(format="other"), "not a fastbp model file"),
    (lambda m: m["config"].update(activation="relux"), "bad model config: activation"),
    (lambda m: m["config"].update(activation=["relu", "tanh"]), "one name per hidden layer"),
    (lambda m: m["config"].update(maxout_pieces="2"), "maxout_pieces"),
    (lambda m: m["config"].update(dtype="int8"), "dtype"),
    (lambda m: m["config"].update(classes=["a", "a", "b"]), "distinct labels"),
    (lambda m: m.update(config=[1]), "'config' must be a JSON object"),
])
def test_edited_model_config_is_refused_naming_the_problem(tmp_path, edit, message):
    _, path = saved_model(tmp_path)
    rewrite(path, edit_meta=edit)
    with pytest.raises(FileFormatError, match=message):
        fastbp.load(path, backend="numpy")


def test_a_classes_list_is_accepted(tmp_path):
    _, path = saved_model(tmp_path)
    rewrite(path, edit_meta=lambda m: m["config"].update(classes=["cat", "dog", 3]))
    model_io.read(path)


def test_huge_sizes_are_refused_before_any_allocation(tmp_path):
    _, path = saved_model(tmp_path)
    rewrite(path, edit_meta=lambda m: m["config"].update(sizes=[5, 20000, 20000, 3]))
    tracemalloc.start()
    with pytest.raises(FileFormatError):
        fastbp.load(path, backend="numpy")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000


@pytest.mark.parametrize("edit,message", [
    (lambda a: a.update(standardizer_std=np.zeros(5)), "standardizer_std must be positive"),
    (lambda a: a.update(standardizer_std=np.ones(4)), r"'standardizer_std' has shape \(4,\)"),
    (lambda a: a.update(standardizer_mean=np.full(5, np.nan)), "NaN or inf"),
    (lambda a: a.update(W_1=np.full((5, 7), np.inf)), "'W_1' holds NaN or inf"),
    (lambda a: a.update(extra=np.zeros(2)), r"unexpected \['extra'\]"),
    (lambda a: a.pop("b_2"), r"missing \['b_2'\]"),
    (lambda a: a.update(W_1=np.array([["x"] * 7] * 5)), "must be numeric"),
])
def test_edited_model_arrays_are_refused(tmp_path, edit, message):
    _, path = saved_model(tmp_path, preprocess="standardize")
    rewrite(path, edit_arrays=edit)
    with pytest.raises(FileFormatError, match=message):
        fastbp.load(path, backend="numpy")


@pytest.mark.parametrize("preprocess", [None, "standardize", "zca"])
@pytest.mark.parametrize("activation", ["relu", "prelu", "maxout"])
def test_validation_agrees_with_the_real_layout(tmp_path, preprocess, activation):
    net, path = saved_model(tmp_path, sizes=[5, 6, 4, 3], activation=activation,
                            preprocess=preprocess)
    expected = dict(model_io.parameter_shapes(net.config, "x"))
    assert expected == {f"{n}_{l}": s for l, spec in enumerate(net.param_layout, 1)
                        for n, s in spec}
    same = fastbp.load(path, backend="numpy")
    X = np.random.default_rng(1).normal(size=(9, 5))
    np.testing.assert_array_equal(same.forward(X), net.forward(X))


@FAST
@given(st.data())
def test_mutated_model_files_load_identically_or_fail_clearly(tmp_path, draw):
    net, path = saved_model(tmp_path, preprocess="standardize")
    raw = bytearray(path.read_bytes())
    how = draw.draw(st.sampled_from(["truncate", "flip", "splice"]))
    at = draw.draw(st.integers(0, len(raw) - 1))
    if how == "truncate":
        raw = raw[:at]
    elif how == "flip":
        raw[at] ^= draw.draw(st.integers(1, 255))
    else:
        raw[at:at] = draw.draw(st.binary(min_size=1, max_size=50))
    path.write_bytes(bytes(raw))
    try:
        same = fastbp.load(path, backend="numpy")
    except CLEAR_ERRORS:
        return
    X = np.random.default_rng(1).normal(size=(4, 5))
    same.forward(X)  # loads only what validates: a usable model


@FAST
@given(st.recursive(st.none() | st.booleans() | st.integers(-3, 30000) | st.text(max_size=5)
                    | st.floats(allow_nan=True), lambda c: st.lists(c, max_size=4)
                    | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8),
       st.sampled_from(["sizes", "activation", "output", "loss", "dtype", "seed", "init",
                        "leaky_slope", "maxout_pieces", "preprocess", "classes", "version"]))
def test_random_config_values_load_or_fail_clearly(tmp_path, value, key):
    _, path = saved_model(tmp_path)
    rewrite(path, edit_meta=(lambda m: m.update(version=value)) if key == "version"
            else (lambda m: m["config"].update({key: value})))
    try:
        fastbp.load(path, backend="numpy")
    except CLEAR_ERRORS:
        pass


def test_a_zip_that_is_not_a_fastbp_file(tmp_path):
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(FileFormatError, match="it has no 'meta' entry"):
        fastbp.load(path)
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    path.write_bytes(buffer.getvalue())
    with pytest.raises(FileFormatError, match="not a complete .npz"):
        fastbp.load(path)


# -- column names, delimiters, digit separators ----------------------------------------------

@FAST
@given(st.permutations(["a", "b", "c", "d"]), st.booleans())
def test_a_header_in_another_order_is_put_back_in_the_training_order(tmp_path, order, target):
    """Same names, any order: the matrix comes back in the training order."""
    values = {name: [j + 10 * k for k in range(3)] for j, name in enumerate("abcd")}
    columns = list(order) + (["label"] if target else [])
    rows = [[values[n][k] if n != "label" else k % 2 for n in columns] for k in range(3)]
    path = tmp_path / "p.csv"
    path.write_text("\n".join(",".join(map(str, r)) for r in [columns] + rows) + "\n")
    expected = csvfile.Columns(["a", "b", "c", "d"], "label")
    if target:
        names, X, _ = csvfile.read_labelled_csv(path, "label", expected=expected)
    else:
        names, X = csvfile.read_csv(path, expected=expected)
    assert names[:4] == ["a", "b", "c", "d"]
    assert X.tolist() == [[values[n][k] for n in "abcd"] for k in range(3)]


@pytest.mark.parametrize("header,message", [
    ("a,c", r"missing \['b'\], unexpected \['c'\]"),
    ("a,b,label", r"unexpected \['label'\] \('label' is the training target: pass --target "
                  "label"),
    ("a,a", r"missing \['b'\], unexpected \[\]"),
    ("a,b,b", r"repeated column names \['b'\]"),
])
def test_columns_that_do_not_match_the_model_are_named(tmp_path, header, message):
    path = tmp_path / "p.csv"
    path.write_text(header + "\n" + ",".join(["1"] * len(header.split(","))) + "\n")
    with pytest.raises(FileFormatError, match=message):
        csvfile.read_csv(path, expected=csvfile.Columns(["a", "b"], "label"))


def test_a_file_without_a_header_or_a_model_without_names_goes_by_position(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("1,2\n3,4\n")
    assert csvfile.read_csv(path, expected=csvfile.Columns(["b", "a"]))[1].tolist() == [
        [1, 2], [3, 4]]
    path.write_text("b,a\n1,2\n")
    assert csvfile.read_csv(path, expected=None)[1].tolist() == [[1, 2]]


def test_a_repeated_target_name_is_ambiguous(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,a,label\n1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match=r"'a' is ambiguous: .*indices \[0, 1\]"):
        csvfile.read_labelled_csv(path, "a")
    assert csvfile.read_labelled_csv(path, "1")[1].tolist() == [[1, 0], [3, 1]]


def test_a_target_name_without_a_header_asks_for_an_index(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match="a file without a header has no column names; give "
                       r"the target column's index \(0 to 2"):
        csvfile.read_labelled_csv(path, "label", header=False)


@pytest.mark.parametrize("separator", [";", "\t"])
def test_another_delimiter_gets_a_hint(tmp_path, separator):
    path = tmp_path / "s.csv"
    path.write_text(separator.join("abc") + "\n" + separator.join("120") + "\n")
    with pytest.raises(FileFormatError, match=re.escape(f"its cells hold {separator!r}")):
        data.load_csv(path)
    path.write_text("a\n1\n2\n")
    with pytest.raises(FileFormatError, match=r"besides the target$"):
        data.load_csv(path)


@FAST
@given(st.integers(1, 10 ** 9), st.integers(1, 8))
def test_digit_separators_are_not_numbers(tmp_path, number, where):
    """``1_000`` reads as 1000 in Python and NumPy; in a CSV it is a typo, not a number."""
    digits = str(number)
    cut = min(where, len(digits) - 1) or 1
    cell = digits[:cut] + "_" + digits[cut:]
    path = tmp_path / "u.csv"
    path.write_text(f"a,b\n1,2\n3,{cell}\n")
    with pytest.raises(FileFormatError, match=rf"line 3, column 2 \('b'\): '{cell}' is not a "
                       "number"):
        csvfile.read_csv(path)
    assert not csvfile.is_number(cell)


def test_an_npz_without_y_and_an_npy_named_npz(tmp_path):
    np.savez(tmp_path / "x.npz", X=np.ones((3, 2)))
    with pytest.raises(FileFormatError, match=r"has no array 'y': expected arrays \['X', 'y'\], "
                       r"found \['X'\]"):
        data.load_npz(tmp_path / "x.npz")
    X, y = data.load_features(tmp_path / "x.npz")
    assert X.shape == (3, 2) and y is None
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    with pytest.raises(FileFormatError, match="is a single .npy array, not an .npz archive"):
        data.load_npz(tmp_path / "a.npz")


@pytest.mark.parametrize("name", ["UP.CSV", "Mixed.Csv", "d.NPZ"])
def test_extensions_are_case_insensitive(tmp_path, name):
    path = tmp_path / name
    if name.lower().endswith(".npz"):
        with open(path, "wb") as f:
            np.savez(f, X=np.ones((4, 2)), y=np.array([0, 1, 0, 1]))
    else:
        path.write_text("a,b\n1,0\n2,1\n")
    assert data.load_any(str(path)).X.shape[1] in (1, 2)


# -- task guess and split ------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-10 ** 6, 10 ** 6), min_size=1, max_size=80))
def test_the_task_guess_wants_few_classes_with_several_rows_each(values):
    y = np.array(values, dtype=np.float64)
    n_distinct = len(set(values))
    labels = n_distinct == 2 or (n_distinct <= 1000 and len(values) >= 2 * n_distinct)
    assert data.guess_task(y) == ("classification" if labels else "regression")
    assert data.guess_task(y + 0.5) == "regression"


def test_a_class_a_stratified_split_cannot_share_is_named():
    y = np.array([0] * 10 + [1])
    X = np.zeros((11, 1))
    with pytest.raises(data.SplitError, match=r"cannot put class 1 in both splits: its 1 "
                       r"row\(s\) all go to the test split"):
        data.train_test_split(X, y, test_size=0.6, stratify=True)
    names = np.array(["cat"] * 10 + ["dog"] * 10)
    with pytest.raises(data.SplitError, match="class 'cat' in both"):
        data.train_test_split(X[:1].repeat(20, 0), y[:1].repeat(20), test_size=0.01,
                              stratify=names)


def test_values_too_large_for_the_dtype_are_named_by_row_and_column():
    X = np.ones((5, 3))
    X[3, 2] = 1e200
    data.check_range(X, "float64", "'f.csv'")
    with pytest.raises(ValueError, match=r"'f.csv': data row 4, feature column 3 \('c'\): "
                       "1e\\+200 is too large for dtype=float32"):
        data.check_range(X, "float32", "'f.csv'", ["a", "b", "c"])
