"""Einsum subscript parsing: a spec string and operand shapes -> a frozen :class:`EinsumSpec`.

Algorithm: one left-to-right scan per operand term (O(len(subscripts)) time), then one pass over
the operands' shapes to size every index (O(sum of ndims)). No array is touched: only shapes.

Semantics follow ``numpy.einsum`` (the C implementation) exactly:

* explicit output (``"ij,jk->ik"``) or implicit output (``"ij,jk"``: the indices that appear
  exactly once, in ASCII order, so upper case sorts before lower case);
* ``...`` broadcasting: the ellipsis of each operand is expanded to fresh letters not used
  anywhere else in the spec, right-aligned (an operand with fewer ellipsis dimensions lacks the
  leading ones); in implicit mode the ellipsis dimensions come first in the output; in explicit
  mode an output without ``...`` is an error when some operand has ellipsis dimensions;
* named indices broadcast like NumPy dimensions: an operand may have size 1 along an index whose
  size elsewhere is ``n`` (recorded in :attr:`EinsumSpec.broadcast`);
* repeated indices inside one operand take a diagonal (``"ii->i"``) or trace (``"ii->"``); their
  dimensions must be equal (no broadcasting inside one operand, as NumPy);
* 0-d operands have the empty term (``",ij->ij"``, ``"->"``); spaces are ignored, but an
  ellipsis is three *adjacent* dots (``". .."`` is rejected, as NumPy rejects it); any number
  of operands; letters ``a-z`` and ``A-Z`` (52 indices at most, ellipsis letters included).

Every term is normalised once, here: :meth:`EinsumSpec.reductions` says, per operand, which
broadcast (size-1) indices are dropped, which repeated indices give a diagonal and which
indices are then left in that operand only (and not in the output) and are summed away.
The planner and the executor both apply exactly this reduction.

NumPy's interleaved form ``(a, [0, 1], b, [1, 2], [0, 2])`` is converted by
:func:`parse_interleaved` (integers 0-25 -> ``A-Z``, 26-51 -> ``a-z``, ``Ellipsis`` -> ``...``).

Example:
    >>> spec = parse_einsum("ij,jk", [(2, 3), (3, 4)])
    >>> spec.subscripts
    'ij,jk->ik'
    >>> spec.output_shape
    (2, 4)
    >>> parse_einsum("...ij,...jk", [(5, 2, 3), (3, 4)]).subscripts
    'aij,jk->aik'
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["EinsumSpec", "FrozenSizes", "LETTERS", "TermReduction", "parse_einsum", "parse_interleaved"]

#: Valid index letters, in the order fresh ellipsis letters are drawn.
LETTERS = string.ascii_lowercase + string.ascii_uppercase
_VALID = frozenset(LETTERS)


class FrozenSizes(Mapping):
    """Read-only, hashable ``index letter -> size`` mapping (insertion order kept).

    >>> s = FrozenSizes({"i": 2, "j": 3})
    >>> s["j"], len(s), dict(s)
    (3, 2, {'i': 2, 'j': 3})
    """

    __slots__ = ("_items", "_map", "_hash")

    def __init__(self, items: Mapping[str, int] | Sequence[tuple[str, int]] = ()):
        pairs = tuple((str(k), int(v)) for k, v in (items.items() if isinstance(items, Mapping) else items))
        object.__setattr__(self, "_items", pairs)
        object.__setattr__(self, "_map", dict(pairs))
        object.__setattr__(self, "_hash", None)  # computed when first asked (see __hash__)

    def as_dict(self) -> dict[str, int]:
        """A new plain dict of the sizes (one C-level copy; ``dict(sizes)`` goes through the
        Mapping protocol, one Python call per index)."""
        return dict(self._map)

    def __getitem__(self, key: str) -> int:
        return self._map[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        # every lookup of a spec in einsum's per-call caches hashes this: computed once, and
        # left out of pickles (__reduce__), since string hashes differ between processes
        h = self._hash
        if h is None:
            h = hash(frozenset(self._items))
            object.__setattr__(self, "_hash", h)
        return h

    def __reduce__(self) -> tuple:
        return FrozenSizes, (self._items,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._map) == dict(other)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenSizes is read-only")

    def __repr__(self) -> str:
        return f"FrozenSizes({self._map!r})"


@dataclass(frozen=True)
class TermReduction:
    """The unary pass of one operand, applied before any pairwise step, in this order.

    1. drop the ``squeezed`` axes: size 1 here while the index is larger elsewhere (NumPy
       broadcasting; the operand is constant along them, so they carry nothing);
    2. take the diagonal of every index in ``diagonal`` (repeated in the term);
    3. sum over ``summed``: indices that, once broadcast axes are dropped, are found in no
       other operand and not in the output (a summed index may be size-1-broadcast in the
       others, as in ``"i,i->"`` with shapes ``(1,)`` and ``(3,)``);
    4. ``kept``: the remaining distinct indices, in first-appearance order.

    >>> parse_einsum("i,i->", [(1,), (3,)]).reductions()[1]
    TermReduction(term='i', squeezed='', diagonal='', summed='i', kept='')
    """

    term: str
    squeezed: str
    diagonal: str
    summed: str
    kept: str

    @property
    def is_identity(self) -> bool:
        """True when the operand goes to the pairwise steps unchanged."""
        return not (self.squeezed or self.diagonal or self.summed)


@dataclass(frozen=True)
class EinsumSpec:
    """A parsed einsum: per-operand index strings (ellipsis expanded), output, index sizes.

    Attributes:
        inputs: one index string per operand, ellipsis already expanded to fresh letters;
            ``len(inputs[k]) == len(shapes[k])``; may repeat a letter (diagonal).
        output: the output indices, distinct letters, in output-axis order.
        sizes: each index's size after broadcasting (read-only mapping).
        broadcast: per operand, the indices along which that operand has size 1 while the
            index's size is not 1 (NumPy broadcasting of a named or ellipsis dimension).
        shapes: the operands' shapes as given.
        ellipsis: the fresh letters that replaced ``...`` (leftmost first), ``""`` if none.
    """

    inputs: tuple[str, ...]
    output: str
    sizes: FrozenSizes
    broadcast: tuple[frozenset[str], ...]
    shapes: tuple[tuple[int, ...], ...]
    ellipsis: str = ""

    @property
    def n_operands(self) -> int:
        """Number of operands."""
        return len(self.inputs)

    @property
    def subscripts(self) -> str:
        """Canonical explicit spec string, e.g. ``'ij,jk->ik'``."""
        return ",".join(self.inputs) + "->" + self.output

    @property
    def indices(self) -> str:
        """Every index, in order of first appearance over the inputs."""
        return "".join(dict.fromkeys("".join(self.inputs)))

    @property
    def contracted(self) -> str:
        """Indices summed over (in the inputs, not in the output), first-appearance order."""
        return "".join(i for i in self.indices if i not in self.output)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the result."""
        return tuple(self.sizes[i] for i in self.output)

    def repeated(self, k: int) -> str:
        """Indices that occur more than once in operand ``k`` (a diagonal is taken)."""
        term = self.inputs[k]
        return "".join(i for i in dict.fromkeys(term) if term.count(i) > 1)

    def private(self, k: int) -> str:
        """Indices summed away from operand ``k`` before any pairwise step.

        They are found in no other operand (other than as a size-1 broadcast axis) and not in
        the output; see :meth:`reductions`.
        """
        return self.reductions()[k].summed

    def reductions(self) -> tuple[TermReduction, ...]:
        """The one normalisation of every term (:class:`TermReduction`), operand by operand.

        >>> [r.kept for r in parse_einsum("ijx,jk->ik", [(2, 3, 9), (3, 4)]).reductions()]
        ['ij', 'jk']
        >>> parse_einsum("ab,b->a", [(4, 1), (5,)]).reductions()[0].squeezed
        'b'
        """
        present = [[i for i in dict.fromkeys(t) if i not in b] for t, b in zip(self.inputs, self.broadcast)]
        out = []
        for k, term in enumerate(self.inputs):
            others = set(self.output).union(*(set(p) for j, p in enumerate(present) if j != k))
            squeezed = "".join(i for i in dict.fromkeys(term) if i in self.broadcast[k])
            diagonal = "".join(i for i in self.repeated(k) if i not in squeezed)
            summed = "".join(i for i in present[k] if i not in others)
            kept = "".join(i for i in present[k] if i in others)
            out.append(TermReduction(term, squeezed, diagonal, summed, kept))
        return tuple(out)

    def dense_size(self, indices: str) -> int:
        """Number of cells of a dense tensor over ``indices`` (a Python int: never overflows)."""
        n = 1
        for i in dict.fromkeys(indices):
            n *= self.sizes[i]
        return n

    def __str__(self) -> str:
        return self.subscripts


_ELL = "\x00"    # one ellipsis, once its three dots are recognised
_ARROW = "\x01"  # the output arrow, once recognised


def _split_term(term: str, k: int, where: str) -> tuple[str, bool, str, str]:
    """Split one term at its ellipsis: (letters, has_ellipsis, before, after)."""
    if term.count(_ELL) > 1:
        raise ValueError(f"ellipsis '...' appears more than once in {where}")
    before, sep, after = term.partition(_ELL)
    for part in (before, after):
        for ch in part:
            if ch == ".":
                raise ValueError(f"subscripts contain a '.' that is not part of an ellipsis ('...') in {where}")
            if ch not in _VALID:
                raise ValueError(f"invalid subscript {ch!r} in {where}: subscripts must be letters a-z, A-Z "
                                 "(and '...')")
    return before + after, bool(sep), before, after


def parse_einsum(subscripts: str, shapes: Sequence[Sequence[int]]) -> EinsumSpec:
    """Parse ``subscripts`` for operands of the given ``shapes`` with ``numpy.einsum`` semantics.

    Args:
        subscripts: e.g. ``"ij,jk->ik"``, ``"ii"``, ``"...ij,...jk"``, ``",i->i"``.
        shapes: one shape per operand.

    Returns:
        The frozen :class:`EinsumSpec`.

    Raises:
        TypeError: ``subscripts`` is not a string or a shape is not a sequence of ints.
        ValueError: invalid character, ``->`` twice, bad ellipsis, wrong operand count, operand
            ndim not matching its term, index sizes that do not broadcast, output index missing
            from the inputs or repeated.

    Example:
        >>> s = parse_einsum("ij,jk->ik", [(3, 1), (4, 5)])
        >>> s.output_shape, s.broadcast
        ((3, 5), (frozenset({'j'}), frozenset()))
        >>> parse_einsum("ii", [(3, 3)]).output
        ''
        >>> parse_einsum("ij,jk->ik", [(2, 3), (4, 5)])
        Traceback (most recent call last):
        ...
        ValueError: index 'j' has size 3 in operand 0 but size 4 in operand 1 (sizes must match or be 1)
    """
    if not isinstance(subscripts, str):
        raise TypeError(f"subscripts must be a str, not {type(subscripts).__name__}")
    shapes_t = _check_shapes(shapes)
    for ch in (_ELL, _ARROW):
        if ch in subscripts:
            raise ValueError(f"invalid subscript {ch!r} in {subscripts!r}: subscripts must be letters a-z, A-Z")
    # An ellipsis is three adjacent dots and the arrow two adjacent characters; spaces elsewhere
    # are ignored (NumPy's rules). Mark both with characters no valid spec holds, then drop spaces.
    spec = subscripts.replace("...", _ELL).replace("->", _ARROW).replace(" ", "")
    if spec.count(_ARROW) > 1:
        raise ValueError(f"subscripts {subscripts!r} contain '->' more than once")
    explicit = _ARROW in spec
    lhs, _, out_term = spec.partition(_ARROW)
    shown = out_term.replace(_ELL, "...")
    if "-" in lhs or ">" in lhs or "-" in out_term or ">" in out_term:
        raise ValueError(f"subscripts {subscripts!r} contain a stray '-' or '>' (the output arrow is '->')")
    if "," in out_term:
        raise ValueError(f"output subscripts {shown!r} must not contain ','")
    terms = lhs.split(",")
    if len(terms) != len(shapes_t):
        raise ValueError(
            f"subscripts {subscripts!r} expect {len(terms)} operand(s) but {len(shapes_t)} were given")

    split = [_split_term(t, k, f"operand {k}") for k, t in enumerate(terms)]
    used = set("".join(s[0] for s in split))
    ell_ndims = []
    for k, ((letters, has_ell, _, _), shape) in enumerate(zip(split, shapes_t)):
        extra = len(shape) - len(letters)
        if extra < 0 or (extra > 0 and not has_ell):
            raise ValueError(
                f"operand {k} has {len(shape)} dimension(s) (shape {shape}) but its subscripts "
                f"{terms[k]!r} name {len(letters)}" + ("" if has_ell else " and have no '...'"))
        ell_ndims.append(extra)
    n_ell = max(ell_ndims, default=0)
    fresh = [c for c in LETTERS if c not in used]
    if n_ell > len(fresh):
        raise ValueError(
            f"too many indices: the ellipsis needs {n_ell} fresh letters but only {len(fresh)} of 52 are unused")
    ell = "".join(fresh[:n_ell])
    inputs = tuple(b + ell[n_ell - e:] + a for (_, _, b, a), e in zip(split, ell_ndims))

    # Size every index: each operand's size must equal the index size or be 1 (broadcast).
    sizes: dict[str, int] = {}
    first: dict[str, int] = {}
    for k, (term, shape) in enumerate(zip(inputs, shapes_t)):
        seen: dict[str, int] = {}
        for idx, n in zip(term, shape):
            if idx in seen and seen[idx] != n:
                raise ValueError(
                    f"index {idx!r} is repeated in operand {k} with different sizes ({seen[idx]} != {n}); "
                    "a diagonal needs equal dimensions")
            seen[idx] = n
        for idx, n in seen.items():
            if idx not in sizes or (sizes[idx] == 1 and n != 1):
                sizes[idx], first[idx] = n, k
            elif n != 1 and n != sizes[idx]:
                where = "ellipsis dimension" if idx in ell else "index"
                raise ValueError(
                    f"{where} {idx!r} has size {sizes[idx]} in operand {first[idx]} but size {n} in "
                    f"operand {k} (sizes must match or be 1)")

    if explicit:
        out_letters, out_has_ell, ob, oa = _split_term(out_term, -1, "the output")
        if out_has_ell:
            output = ob + ell + oa
        else:
            if n_ell:
                raise ValueError(
                    f"operands have {n_ell} ellipsis dimension(s) but the output {shown!r} has no '...' "
                    "to place them")
            output = out_letters
        for idx in out_letters:
            if out_letters.count(idx) > 1:
                raise ValueError(f"output index {idx!r} appears more than once in the output {shown!r}")
            if idx not in sizes:
                raise ValueError(f"output index {idx!r} does not appear in any input")
    else:
        joined = "".join(s[0] for s in split)
        output = ell + "".join(sorted(i for i in set(joined) if joined.count(i) == 1))

    ordered = {i: sizes[i] for i in "".join(inputs)}
    broadcast = tuple(frozenset(i for i, n in zip(term, shape) if n == 1 and sizes[i] != 1)
                      for term, shape in zip(inputs, shapes_t))
    return EinsumSpec(inputs=inputs, output=output, sizes=FrozenSizes(ordered), broadcast=broadcast,
                      shapes=shapes_t, ellipsis=ell)


def _check_shapes(shapes: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    if isinstance(shapes, (str, bytes)) or not isinstance(shapes, Sequence):
        raise TypeError(f"shapes must be a sequence of shapes, not {type(shapes).__name__}")
    out = []
    for k, shape in enumerate(shapes):
        try:
            t = tuple(int(n) for n in shape)
        except TypeError:
            raise TypeError(f"shape of operand {k} must be a sequence of ints, got {shape!r}") from None
        if any(n < 0 for n in t):
            raise ValueError(f"shape of operand {k} has a negative dimension: {t}")
        out.append(t)
    if not out:
        raise ValueError("einsum needs at least one operand")
    return tuple(out)


def _sublist_term(sub: Any, where: str) -> str:
    if isinstance(sub, (str, bytes)) or not isinstance(sub, Sequence):
        raise TypeError(f"{where} must be a list of ints in [0, 52) or Ellipsis, got {sub!r}")
    parts = []
    for s in sub:
        if s is Ellipsis:
            parts.append("...")
        elif isinstance(s, bool) or not isinstance(s, int) and not hasattr(s, "__index__"):
            raise TypeError(f"{where} must contain ints in [0, 52) or Ellipsis, got {s!r}")
        elif not 0 <= int(s) < 52:
            raise ValueError(f"subscript {int(s)} in {where} is out of range [0, 52)")
        else:
            parts.append(string.ascii_uppercase[s] if s < 26 else string.ascii_lowercase[s - 26])
    return "".join(parts)


def parse_interleaved(args: Sequence[Any]) -> tuple[str, list[Any]]:
    """Convert NumPy's interleaved einsum arguments to ``(subscripts, operands)``.

    ``(a, [0, 1], b, [1, 2], [0, 2])`` -> ``("AB,BC->AC", [a, b])``; integers 0-25 map to ``A-Z``
    and 26-51 to ``a-z`` (ASCII order, so the implicit output order matches NumPy's).

    Example:
        >>> parse_interleaved(["A", [0, 1], "B", [1, 2], [0, 2]])
        ('AB,BC->AC', ['A', 'B'])
        >>> parse_interleaved(["x", [Ellipsis, 27]])
        ('...b', ['x'])
    """
    args = list(args)
    if len(args) < 2:
        raise ValueError("interleaved einsum needs (operand, sublist) pairs, e.g. (a, [0, 1], b, [1, 2])")
    operands = args[0::2][: len(args) // 2]
    terms = [_sublist_term(s, f"sublist of operand {k}") for k, s in enumerate(args[1::2])]
    spec = ",".join(terms)
    if len(args) % 2:
        spec += "->" + _sublist_term(args[-1], "output sublist")
    return spec, operands
