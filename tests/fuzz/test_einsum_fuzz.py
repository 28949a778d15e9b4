"""Fuzz: einsum against NumPy over random specs, dtypes, operand kinds, limits and inf/nan.

* every valid spec is accepted and gives ``numpy.einsum``'s dtype and values (NumPy's own
  answer for inf/nan: small problems take the dense reference tier);
* with the dense reference tier switched off, the by-terms tier gives the term-by-term
  definition (every product of ``numpy.einsum(..., -> all indices)``, then summed);
* random strings are accepted exactly when NumPy accepts them, and rejected with ValueError.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import flexsparse as fs
from flexsparse.contract.parser import parse_einsum

from ._strategies import check_against, einsum_problems, fuzz_settings

FUZZ = fuzz_settings()


def _oracle(spec, dense):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        want = np.asarray(np.einsum(spec, *dense))
        scale = np.einsum(spec, *[np.abs(d.astype(np.complex128 if d.dtype.kind == "c" else np.float64))
                                  for d in dense])
    return want, np.abs(scale)


def _run(spec, ops, kwargs):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fs.einsum(spec, *ops, **kwargs)


@FUZZ
@given(problem=einsum_problems())
def test_einsum_matches_numpy(problem):
    spec, dense, ops, kwargs = problem
    want, scale = _oracle(spec, dense)
    check_against(_run(spec, ops, kwargs), want, scale)


def _by_terms(spec, dense):
    """The definition, product by product: every term over all indices, then summed."""
    p = parse_einsum(spec, [d.shape for d in dense])
    full = "".join(dict.fromkeys("".join(p.inputs)))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        terms = np.einsum(",".join(p.inputs) + "->" + full, *dense)   # no sums: one product per cell
        summed = tuple(m for m, c in enumerate(full) if c not in p.output)
        kept = "".join(c for c in full if c in p.output)
        res = terms.sum(axis=summed, dtype=terms.dtype) if summed else terms
        want = np.asarray(np.transpose(res, [kept.index(c) for c in p.output]) if p.output else res)
        scale = np.abs(np.einsum(",".join(p.inputs) + "->" + p.output,
                                 *[np.abs(d.astype(np.complex128 if d.dtype.kind == "c" else np.float64))
                                   for d in dense]))
    return want, scale


@FUZZ
@given(problem=einsum_problems(nonfinite=True))
def test_nonfinite_by_terms_tier_follows_the_definition(problem, monkeypatch):
    from flexsparse import _limits

    monkeypatch.setattr(_limits, "NONFINITE_DENSE_LOOPS", -1)   # never the dense reference tier
    spec, dense, ops, kwargs = problem
    want, scale = _by_terms(spec, dense)
    check_against(_run(spec, ops, kwargs), want, scale)


_CHARS = st.sampled_from(list("ijkIJ.,-> ") + ["...", "->"])


@FUZZ
@given(text=st.lists(_CHARS, max_size=8).map("".join),
       ndims=st.lists(st.integers(0, 3), min_size=1, max_size=4), size1=st.booleans())
def test_spec_accepted_exactly_when_numpy_accepts(text, ndims, size1):
    n_ops = text.split("->")[0].count(",") + 1
    ops = [np.ones((1 if size1 else 2,) * ndims[k % len(ndims)]) for k in range(n_ops)]
    try:
        want = np.einsum(text, *ops)
    except ValueError:
        with pytest.raises(ValueError):
            fs.einsum(text, *ops)
        return
    got = fs.einsum(text, *ops)
    np.testing.assert_allclose(np.asarray(got.todense() if hasattr(got, "todense") else got), want)
