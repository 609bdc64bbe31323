"""Label coding (fastbp.labels) and the weight algebra, as properties over their input space."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastbp
from fastbp.csvfile import read_labelled_csv
from fastbp.labels import LabelCoder, class_index
from fastbp.weights import class_weights, row_weights

labels = st.one_of(st.text(min_size=1, max_size=4), st.integers(-1000, 1000))
#: characters a NumPy string array keeps (it drops trailing NULs: np.array(['\x00']) is '')
NUMPY_CHARACTERS = st.characters(exclude_characters="\x00")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=4), min_size=2, max_size=40))
def test_string_labels_round_trip(values):
    y = np.array(values, dtype=object)
    if len(set(values)) < 2:
        with pytest.raises(ValueError, match="at least 2 classes"):
            LabelCoder().fit(y)
        return
    coder = LabelCoder().fit(y)
    index = coder.encode(y)
    one_hot = np.eye(len(coder.classes))[index.astype(int)]
    if coder.kind == "binary":
        one_hot = index[:, None]
    assert coder.decode(one_hot).tolist() == values
    assert coder.classes.tolist() == sorted(set(values))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-50, 50), min_size=2, max_size=40, unique=True))
def test_integer_labels_with_gaps_get_one_output_each(values):
    coder = LabelCoder().fit(np.array(values))
    assert coder.n_outputs == (1 if len(values) == 2 else len(values))
    assert class_index(values, coder.classes).tolist() == [sorted(values).index(v)
                                                           for v in values]


def test_unknown_labels_and_mixed_types_are_named():
    coder = LabelCoder().fit(np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="not seen in training: \\['z'\\]"):
        coder.encode(np.array(["a", "z"]))
    with pytest.raises(TypeError, match="mixes label types"):
        LabelCoder().fit(np.array(["a", 1, 2.5], dtype=object))
    with pytest.raises(ValueError, match="indicator"):
        LabelCoder().fit(np.array([[0, 2], [1, 0]]))


def test_multilabel_indicators():
    Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    coder = LabelCoder().fit(Y)
    assert coder.kind == "multilabel" and coder.output == ("sigmoid", "binary_cross_entropy")
    np.testing.assert_array_equal(coder.decode(coder.encode(Y) * 0.8 + 0.1), Y)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 4)),
                  elements=st.floats(-1e3, 1e3)),
       st.data())
def test_weight_rows_is_w_over_the_weight_sum(x, data):
    w = data.draw(hnp.arrays(np.float64, (x.shape[0], 1), elements=st.floats(0.01, 100)))
    be = fastbp.get_backend("numpy")
    out, total = x.copy(), np.zeros(1)
    be.weight_rows(out, w, total)
    np.testing.assert_allclose(out, x * w / w.sum(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(total, w.sum())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=4, max_size=60))
def test_balanced_class_weights_give_every_present_class_equal_mass(labels_):
    y = np.array(labels_)
    Y = np.eye(4)[y]
    w = class_weights("balanced", Y, "classification")
    present = np.unique(y)
    mass = [w[y == k].sum() for k in present]
    np.testing.assert_allclose(mass, len(y) / len(present))
    assert row_weights(np.ones(len(y)), None, Y, "classification") is not None


def test_csv_with_a_name_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,kind\n1,2,x\n3,4,y\n")
    header, X, y = read_labelled_csv(path, "kind")
    assert header == ["a", "b", "kind"] and X.tolist() == [[1, 2], [3, 4]]
    assert y.tolist() == ["x", "y"]
    path.write_text("1,2,x\n3,4,y\n")  # no header: the label column is not a header's sign
    header, X, y = read_labelled_csv(path, -1)
    assert header is None and X.tolist() == [[1, 2], [3, 4]] and y.tolist() == ["x", "y"]
    path.write_text("a,b,kind\n1,oops,x\n")
    with pytest.raises(ValueError, match="line 2, column 2 .'b'.: 'oops' is not a number"):
        read_labelled_csv(path, "kind")
    path.write_text("a,b,kind\n1,2,NA\n")
    with pytest.raises(ValueError, match="line 2, column 3 .'kind'.: missing value"):
        read_labelled_csv(path, "kind")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 5), st.floats(-1e6, 1e6), st.integers(1, 7),
       st.booleans())
def test_column_moments_equal_numpys_in_chunks(n, d, offset, chunk, weighted):
    """Chunked, shifted moments equal numpy's weighted mean and std, large means included."""
    from fastbp.weights import column_moments

    rng = np.random.default_rng(n * 7 + d)
    X = (rng.normal(size=(n, d)) + offset).astype(np.float32)
    w = rng.integers(1, 4, n).astype(float) if weighted else None
    mean, std = column_moments(X, w, chunk=chunk)
    ref = np.average(X.astype(np.float64), axis=0, weights=w)
    ref_std = np.sqrt(np.average((X - ref) ** 2, axis=0, weights=w))
    np.testing.assert_allclose(mean, ref, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(std, ref_std, rtol=1e-7, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(NUMPY_CHARACTERS, min_size=1, max_size=4), min_size=2, max_size=6,
                unique=True),
       st.lists(st.text(NUMPY_CHARACTERS, min_size=1, max_size=8), min_size=1, max_size=10))
def test_class_index_matches_whole_names_only(classes, labels):
    """A label is its class only when equal in full: no truncation to the classes' width."""
    classes = sorted(classes)
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        with pytest.raises(ValueError, match="not seen in training") as info:
            class_index(np.array(labels), classes)
        assert repr(unknown[0]) in str(info.value)
    else:
        assert class_index(np.array(labels), classes).tolist() == [classes.index(v)
                                                                   for v in labels]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-100, 100), min_size=2, max_size=6, unique=True),
       st.lists(st.floats(-200, 200, allow_nan=False), min_size=1, max_size=10))
def test_class_index_compares_numbers_as_numbers(classes, labels):
    """10.7 is not class 10: integer classes are not a cast of the labels."""
    classes = sorted(classes)
    if all(v in classes for v in labels):
        assert class_index(np.array(labels), classes).tolist() == [classes.index(v)
                                                                   for v in labels]
    else:
        with pytest.raises(ValueError, match="not seen in training"):
            class_index(np.array(labels), classes)


@pytest.mark.parametrize("labels,classes,message", [
    (["cat"], [10, 20, 30], "holds names \\(such as 'cat'\\), but the classes are numbers"),
    ([10.7], ["cat", "dog"], "holds numbers \\(such as 10.7\\), but the classes are names"),
])
def test_a_label_of_the_other_type_is_named(labels, classes, message):
    with pytest.raises(ValueError, match=message):
        class_index(np.array(labels), classes, "the --target column")


def test_one_class_where_min_classes_lets_it():
    """The estimators' case (scikit-learn's): target 0, always the prediction, [1-p, p]."""
    y = np.array(["only"] * 4)
    coder = LabelCoder().fit(y, min_classes=1)
    assert coder.kind == "binary" and coder.n_outputs == 1
    assert coder.encode(y).tolist() == [0.0] * 4
    outputs = np.array([[0.2], [0.9]])
    assert coder.decode(outputs).tolist() == ["only", "only"]
    assert coder.probabilities(outputs).shape == (2, 2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        LabelCoder().fit(y)
