"""parse_einsum against numpy.einsum's semantics (shapes, errors) and the EinsumSpec helpers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexsparse.contract.parser import EinsumSpec, FrozenSizes, parse_einsum, parse_interleaved


def np_shape(subscripts, shapes):
    return np.einsum(subscripts, *[np.zeros(s) for s in shapes]).shape


@pytest.mark.parametrize("subscripts, shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("ij,jk", [(2, 3), (3, 4)]),
    ("Ba,aA", [(2, 3), (3, 4)]),          # implicit output in ASCII order: 'AB'
    ("ba,aB", [(2, 3), (3, 4)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),
    ("iij->ji", [(2, 2, 5)]),
    ("ij->", [(2, 3)]),
    ("ijk->ki", [(2, 3, 4)]),
    (",ij->ij", [(), (2, 3)]),
    ("->", [()]),
    ("", [()]),
    ("i,i", [(1,), (3,)]),                # named index broadcasting
    ("ij,jk", [(3, 1), (4, 5)]),
    ("...ij,...jk", [(5, 2, 3), (3, 4)]),
    ("...ij,...jk", [(5, 1, 2, 3), (7, 3, 4)]),
    ("...ij,...jk->...ik", [(5, 1, 2, 3), (7, 3, 4)]),
    ("i...i", [(3, 2, 3)]),
    ("i->...", [(3,)]),
    ("...->...", [()]),
    ("i j, j k -> i k", [(2, 3), (3, 4)]),
    ("iI", [(2, 3)]),
    ("ab,bc,cd,de,ef->af", [(2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]),
    ("ij,ij->ij", [(1, 1), (3, 1)]),
    ("ij,jk->ik", [(0, 3), (3, 4)]),      # empty extent
    ("ij,jk->ik", [(2, 1), (0, 4)]),      # size 1 broadcasts to 0
])
def test_output_shape_matches_numpy(subscripts, shapes):
    spec = parse_einsum(subscripts, shapes)
    assert spec.output_shape == np_shape(subscripts, shapes)
    # The canonical explicit spec evaluates to the same result as the original one.
    rng = np.random.default_rng(0)
    ops = [rng.standard_normal(s) for s in shapes]
    np.testing.assert_allclose(np.einsum(spec.subscripts, *ops), np.einsum(subscripts, *ops))


def test_spec_fields():
    s = parse_einsum("ij,jk", [(3, 1), (4, 5)])
    assert s.inputs == ("ij", "jk") and s.output == "ik"
    assert dict(s.sizes) == {"i": 3, "j": 4, "k": 5}
    assert s.broadcast == (frozenset("j"), frozenset())
    assert s.subscripts == "ij,jk->ik" and str(s) == "ij,jk->ik"
    assert s.indices == "ijk" and s.contracted == "j" and s.n_operands == 2
    e = parse_einsum("...ij,...jk", [(5, 1, 2, 3), (7, 3, 4)])
    assert e.ellipsis == "ab" and e.inputs == ("abij", "bjk") and e.output == "abik"
    assert e.broadcast == (frozenset("b"), frozenset())
    d = parse_einsum("iij,jk,kl->il", [(2, 2, 3), (3, 4), (4, 5)])
    assert d.repeated(0) == "i" and d.repeated(1) == ""
    assert d.private(0) == "" and parse_einsum("ijx,jk->ik", [(2, 3, 9), (3, 4)]).private(0) == "x"


def test_dense_size_never_overflows():
    # FROSTT Flickr: ~1e22 cells, more than int64 holds.
    s = parse_einsum("ijkl->", [(320_000, 28_000_000, 1_600_000, 731)])
    assert s.dense_size("ijkl") == 320_000 * 28_000_000 * 1_600_000 * 731
    assert s.dense_size("ijkl") > np.iinfo(np.int64).max


def test_spec_is_frozen_and_hashable():
    s = parse_einsum("ij,jk", [(2, 3), (3, 4)])
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.output = "ki"
    with pytest.raises(TypeError):
        s.sizes["i"] = 7
    with pytest.raises(AttributeError):
        s.sizes._map = {}
    assert hash(s) == hash(parse_einsum("ij,jk->ik", [(2, 3), (3, 4)]))
    assert s == parse_einsum("ij,jk->ik", [(2, 3), (3, 4)])
    assert FrozenSizes({"a": 1}) == {"a": 1} and FrozenSizes({"a": 1}) != FrozenSizes({"a": 2})


def test_interleaved_matches_numpy():
    a, b = np.ones((2, 3)), np.ones((3, 4))
    sub, ops = parse_interleaved([a, [0, 1], b, [1, 2], [0, 2]])
    assert sub == "AB,BC->AC" and ops[0] is a and ops[1] is b
    assert parse_einsum(sub, [a.shape, b.shape]).output_shape == np.einsum(a, [0, 1], b, [1, 2], [0, 2]).shape
    sub, _ = parse_interleaved([a, [27, 26], b, [26, 40]])   # implicit: sorted by integer
    assert parse_einsum(sub, [a.shape, b.shape]).output_shape == np.einsum(a, [27, 26], b, [26, 40]).shape
    x = np.ones((5, 2, 3))
    sub, _ = parse_interleaved([x, [Ellipsis, 0, 1], [Ellipsis, 1]])
    assert parse_einsum(sub, [x.shape]).output_shape == np.einsum(x, [Ellipsis, 0, 1], [Ellipsis, 1]).shape
    with pytest.raises(ValueError, match="out of range"):
        parse_interleaved([a, [0, 52]])
    with pytest.raises(TypeError, match="ints in"):
        parse_interleaved([a, [0, "j"]])
    with pytest.raises(TypeError, match="sublist of operand 0"):
        parse_interleaved([a, "ij"])
    with pytest.raises(ValueError, match="pairs"):
        parse_interleaved([a])


@pytest.mark.parametrize("subscripts, shapes, message", [
    ("i1", [(2, 3)], r"invalid subscript '1' in operand 0"),
    ("i\tj", [(2, 3)], r"invalid subscript '\\t'"),
    ("ij->ij->", [(3, 3)], r"contain '->' more than once"),
    ("i-j", [(2, 3)], r"stray '-' or '>'"),
    ("i>j", [(2, 3)], r"stray '-' or '>'"),
    ("ij->i,j", [(2, 3)], r"must not contain ','"),
    ("i->j", [(3,)], r"output index 'j' does not appear in any input"),
    ("i->ii", [(3,)], r"output index 'i' appears more than once"),
    ("ij,jk", [(2, 3)], r"expect 2 operand\(s\) but 1 were given"),
    ("ij", [(2, 3), (3, 4)], r"expect 1 operand\(s\) but 2 were given"),
    ("ij,jk->ik", [(2, 3), (4, 5)], r"index 'j' has size 3 in operand 0 but size 4 in operand 1"),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (5, 6)], r"index 'k' has size 4 in operand 1 but size 5 in operand 2"),
    ("ii", [(2, 3)], r"index 'i' is repeated in operand 0 with different sizes \(2 != 3\)"),
    ("ii", [(1, 3)], r"repeated in operand 0 with different sizes \(1 != 3\)"),
    ("...,...", [(2,), (3,)], r"ellipsis dimension 'a' has size 2 in operand 0 but size 3 in operand 1"),
    ("..i", [(3,)], r"'\.' that is not part of an ellipsis"),
    ("i...j...", [(2, 3)], r"ellipsis '\.\.\.' appears more than once in operand 0"),
    ("i->....", [(3,)], r"more than once in the output|not part of an ellipsis"),
    ("...i->i", [(2, 3)], r"1 ellipsis dimension\(s\) but the output 'i' has no '\.\.\.'"),
    ("ij", [(2,)], r"operand 0 has 1 dimension\(s\) \(shape \(2,\)\) but its subscripts 'ij' name 2"),
    ("i", [(2, 3)], r"operand 0 has 2 dimension\(s\).*name 1 and have no '\.\.\.'"),
    ("...ij", [(2,)], r"operand 0 has 1 dimension"),
])
def test_errors(subscripts, shapes, message):
    with pytest.raises(ValueError, match=message):
        parse_einsum(subscripts, shapes)


def test_type_errors_and_bad_shapes():
    with pytest.raises(TypeError, match="subscripts must be a str"):
        parse_einsum(["ij"], [(2, 3)])
    with pytest.raises(TypeError, match="shapes must be a sequence"):
        parse_einsum("ij", 5)
    with pytest.raises(TypeError, match="shape of operand 0"):
        parse_einsum("ij", [5])
    with pytest.raises(ValueError, match="negative dimension"):
        parse_einsum("ij", [(2, -1)])
    with pytest.raises(ValueError, match="at least one operand"):
        parse_einsum("", [])


def test_too_many_letters_for_the_ellipsis():
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXY"   # 51 letters
    with pytest.raises(ValueError, match="needs 2 fresh letters but only 1 of 52"):
        parse_einsum(letters + "...", [(1,) * 53])


# ------------------------------------------------------------------------------ hypothesis
LETTERS = "abcdeXYZ"


@st.composite
def valid_case(draw):
    """A random valid spec: 1-5 operands, repeated/broadcast indices, optional ellipsis."""
    letters = draw(st.lists(st.sampled_from(LETTERS), min_size=1, max_size=6, unique=True))
    sizes = {c: draw(st.integers(1, 4)) for c in letters}
    n = draw(st.integers(1, 5))
    ell_shape = draw(st.lists(st.integers(1, 3), max_size=2)) if draw(st.booleans()) else None
    terms, shapes, any_ell = [], [], False
    for _ in range(n):
        t = "".join(draw(st.lists(st.sampled_from(letters), max_size=4)))
        one = {c: draw(st.integers(0, 4)) == 0 for c in set(t)}   # broadcast this index here
        shape = [1 if one[c] else sizes[c] for c in t]
        if ell_shape is not None and draw(st.booleans()):
            k = draw(st.integers(0, len(ell_shape)))
            eshape = [1 if draw(st.integers(0, 3)) == 0 else m for m in ell_shape[len(ell_shape) - k:]]
            pos = draw(st.integers(0, len(t)))
            shape = shape[:pos] + eshape + shape[pos:]
            t = t[:pos] + "..." + t[pos:]
            any_ell = True
        terms.append(t)
        shapes.append(tuple(shape))
    spec = ",".join(terms)
    if draw(st.booleans()):
        used = sorted(set("".join(terms)) - {"."})
        out = "".join(draw(st.permutations(used))[:draw(st.integers(0, len(used)))])
        if any_ell or (ell_shape is not None and draw(st.booleans())):
            pos = draw(st.integers(0, len(out)))
            out = out[:pos] + "..." + out[pos:]
        spec += "->" + out
    return spec, shapes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_case())
def test_random_valid_specs_match_numpy(case):
    subscripts, shapes = case
    spec = parse_einsum(subscripts, shapes)
    assert spec.output_shape == np_shape(subscripts, shapes)
    assert [len(t) for t in spec.inputs] == [len(s) for s in shapes]
    assert len(set(spec.output)) == len(spec.output)
    for k, (term, shape) in enumerate(zip(spec.inputs, shapes)):
        for i, n in zip(term, shape):
            assert n == spec.sizes[i] or (n == 1 and i in spec.broadcast[k])
    # The canonical spec means the same thing to NumPy.
    assert np_shape(spec.subscripts, shapes) == spec.output_shape


@st.composite
def any_case(draw):
    """Random specs with independently drawn extents: often invalid."""
    n = draw(st.integers(1, 3))
    terms = ["".join(draw(st.lists(st.sampled_from("abcA"), max_size=3))) for _ in range(n)]
    terms = [t if not draw(st.integers(0, 4)) == 0 else "..." + t for t in terms]
    shapes = []
    for t in terms:
        nd = len(t.replace("...", "")) + (draw(st.integers(0, 2)) if "..." in t else 0)
        nd = max(0, nd + (1 if draw(st.integers(0, 9)) == 0 else 0))
        shapes.append(tuple(draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))))
    spec = ",".join(terms)
    if draw(st.booleans()):
        spec += "->" + "".join(draw(st.lists(st.sampled_from("abcA."), max_size=3)))
    return spec, shapes


@settings(max_examples=300, deadline=None)
@given(any_case())
def test_raises_exactly_when_numpy_raises(case):
    subscripts, shapes = case
    try:
        expected = np_shape(subscripts, shapes)
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            parse_einsum(subscripts, shapes)
    else:
        assert parse_einsum(subscripts, shapes).output_shape == expected


def test_spec_is_einsumspec():
    assert isinstance(parse_einsum("i", [(2,)]), EinsumSpec)
