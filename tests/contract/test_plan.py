"""Planner: plans are executable (checked by running them with numpy.einsum), optimizers compare
as they must, engine/format rules, explicit paths, errors, einsum_path's NumPy-like output."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexsparse.contract.cost import estimate_pair, method_cost
from flexsparse.contract.parser import parse_einsum
from flexsparse.contract.plan import (
    DEFAULT_DENSE_LIMIT,
    OPTIMIZERS,
    EinsumPlan,
    choose_method,
    choose_output_format,
    einsum_path,
    path_cost,
    plan_einsum,
    register_optimizer,
)
from flexsparse.contract.stats import OperandStats, dense_stats, operand_stats
from flexsparse.formats.coo import COO


def make_plan(subscripts, ops, optimize="auto", **kw) -> EinsumPlan:
    spec = parse_einsum(subscripts, [np.shape(o) if not hasattr(o, "shape") else o.shape for o in ops])
    return plan_einsum(spec, [operand_stats(t, o) for t, o in zip(spec.inputs, ops)], optimize, **kw)


def run_plan(plan: EinsumPlan, arrays) -> np.ndarray:
    """Execute a plan step by step with numpy.einsum, checking its bookkeeping on the way."""
    spec = plan.spec
    cur = []
    for k, (arr, term) in enumerate(zip(arrays, spec.inputs)):
        unary = [u for u in plan.unary if u.operand == k]
        if unary:
            (u,) = unary
            assert u.in_indices == term
            keep = [ax for ax, c in enumerate(term) if c not in u.squeezed]
            arr = arr.reshape([arr.shape[ax] for ax in keep])
            term = "".join(term[ax] for ax in keep)
            assert set(u.diagonal) == {c for c in term if term.count(c) > 1}
            assert set(term) - set(u.out_indices) == set(u.summed)
            arr = np.einsum(f"{term}->{u.out_indices}", arr)
            term = u.out_indices
        assert term == plan.operand_indices[k]
        cur.append((arr, term))
    assert len(plan.steps) == len(arrays) - 1
    for step in plan.steps:
        (x, xi), (y, yi) = cur[step.lhs], cur[step.rhs]
        assert step.lhs < step.rhs
        assert (xi, yi) == (step.lhs_indices, step.rhs_indices)
        shared = set(xi) & set(yi)
        assert set(step.contracted) == shared - set(step.out_indices)
        assert set(step.batch) == shared & set(step.out_indices)
        assert set(step.out_indices) <= set(xi) | set(yi)
        assert step.method in ("dense", "gustavson", "dot", "spmm")
        assert step.out_format in ("coo", "dense")
        assert step.est_nnz <= step.est_flops + 1e-9 or step.est_flops == 0 or step.est_nnz == 0
        r = np.einsum(step.subscripts, x, y)
        cur = [c for j, c in enumerate(cur) if j not in (step.lhs, step.rhs)] + [(r, step.out_indices)]
    (res, ri), = cur
    if plan.steps:
        assert ri == spec.output
    return np.einsum(f"{ri}->{spec.output}", res)


# ------------------------------------------------------------------------------ hypothesis
@st.composite
def plan_case(draw, max_ops=5):
    letters = draw(st.lists(st.sampled_from("abcdeXY"), min_size=1, max_size=6, unique=True))
    sizes = {c: draw(st.integers(1, 4)) for c in letters}
    n = draw(st.integers(1, max_ops))
    terms, arrays = [], []
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    for _ in range(n):
        t = "".join(draw(st.lists(st.sampled_from(letters), max_size=4)))
        ext: dict[str, int] = {}     # one extent per index inside an operand (diagonals)
        shape = tuple(ext.setdefault(c, 1 if draw(st.integers(0, 5)) == 0 else sizes[c]) for c in t)
        if draw(st.integers(0, 3)) == 0:                  # an ellipsis of 0-2 broadcast dims
            eshape = (2, 3)[2 - draw(st.integers(0, 2)):]
            eshape = tuple(1 if draw(st.integers(0, 3)) == 0 else m for m in eshape)
            t, shape = "..." + t, eshape + shape
        terms.append(t)
        density = draw(st.sampled_from([0.0, 0.2, 0.6, 1.0]))
        arrays.append(np.where(rng.random(shape) < density, rng.integers(1, 5, shape), 0).astype(np.float64))
    spec = ",".join(terms)
    if draw(st.booleans()):
        used = sorted(set("".join(terms)) - {"."})
        out = "".join(draw(st.permutations(used))[:draw(st.integers(0, len(used)))])
        if "..." in spec:
            out = "..." + out
        spec += "->" + out
    as_coo = [draw(st.booleans()) for _ in arrays]
    return spec, arrays, as_coo


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan_case(), st.sampled_from(["auto", "greedy", "optimal", "left"]))
def test_random_plans_execute_to_numpy_result(case, optimize):
    subscripts, arrays, as_coo = case
    ops = [COO.from_numpy(a) if c else a for a, c in zip(arrays, as_coo)]
    plan = make_plan(subscripts, ops, optimize)
    assert len(plan.steps) == len(arrays) - 1
    # every index not in the output is summed exactly once: in a unary step or in one step
    summed = [i for u in plan.unary for i in u.summed] + [i for s in plan.steps for i in s.contracted]
    squeezed = {i for u in plan.unary for i in u.squeezed}
    assert sorted(summed) == sorted(set(summed))
    assert set(summed) | squeezed >= set(plan.spec.contracted) - squeezed
    np.testing.assert_allclose(run_plan(plan, arrays), np.einsum(subscripts, *arrays))
    assert plan.out_format in ("coo", "dense") and 0 <= plan.est_density <= 1


def random_stats(draw, n):
    letters = "abcdefg"
    sizes = {c: draw(st.sampled_from([5, 40, 300])) for c in letters}
    terms = ["".join(draw(st.lists(st.sampled_from(letters), min_size=1, max_size=3, unique=True)))
             for _ in range(n)]
    seen = "".join(terms)
    out = "".join(c for c in dict.fromkeys(seen) if seen.count(c) == 1)
    spec = parse_einsum(",".join(terms) + "->" + out, [tuple(sizes[c] for c in t) for t in terms])
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    stats = []
    for t, shape in zip(spec.inputs, spec.shapes):
        if draw(st.booleans()):
            stats.append(dense_stats(t, shape))
        else:
            nnz = min(3000, int(np.prod(shape) * draw(st.sampled_from([0.001, 0.01, 0.1]))))
            coords = np.array([rng.integers(0, s, nnz) for s in shape]).reshape(len(shape), nnz)
            stats.append(operand_stats(t, COO(coords, np.ones(nnz), shape)))
    return spec, stats


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_greedy_never_beats_optimal(data):
    n = data.draw(st.integers(2, 6))
    spec, stats = random_stats(data.draw, n)
    opt = plan_einsum(spec, stats, "optimal")
    # greedy always; any path when "optimal" enumerates them all (n <= 5; DP is approximate)
    for other in ("greedy", "auto") + (("left",) if n <= 5 else ()):
        assert plan_einsum(spec, stats, other).est_cost >= opt.est_cost * (1 - 1e-9)
    assert path_cost(spec, stats, opt.path) == pytest.approx(opt.est_cost)


def all_paths(n):
    if n == 1:
        yield []
        return
    for i, j in itertools.combinations(range(n), 2):
        for rest in all_paths(n - 1):
            yield [(i, j)] + rest


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_optimal_is_the_cheapest_path_for_few_operands(data):
    spec, stats = random_stats(data.draw, data.draw(st.integers(2, 4)))
    best = min(path_cost(spec, stats, p) for p in all_paths(spec.n_operands))
    assert plan_einsum(spec, stats, "optimal").est_cost == pytest.approx(best)


def test_subset_dp_for_many_operands_beats_left():
    rng = np.random.default_rng(0)
    sizes = [30, 300, 10, 400, 20, 300, 10, 200, 30]
    ops = [np.ones((sizes[k], sizes[k + 1])) for k in range(8)]
    ops[3] = COO.from_numpy(np.where(rng.random((400, 20)) < 0.01, 1.0, 0.0))
    sub = "ab,bc,cd,de,ef,fg,gh,hi->ai"
    opt = make_plan(sub, ops, "optimal")
    assert opt.est_cost <= make_plan(sub, ops, "left").est_cost
    assert opt.est_cost <= make_plan(sub, ops, "greedy").est_cost
    dense = [o.todense() if isinstance(o, COO) else o for o in ops]
    np.testing.assert_allclose(run_plan(opt, dense), np.einsum(sub, *dense, optimize=True))
    # disconnected operands: components joined by outer products
    d = make_plan("ab,bc,de,ef,gh,hi,j", [np.ones((3, 3))] * 6 + [np.ones(2)], "optimal")
    x = [np.arange(9.0).reshape(3, 3) + k for k in range(6)] + [np.ones(2)]
    np.testing.assert_allclose(run_plan(d, x), np.einsum("ab,bc,de,ef,gh,hi,j", *x, optimize=True))
    big = parse_einsum(",".join("a" * 1 for _ in range(11)), [(2,)] * 11)
    with pytest.raises(ValueError, match="at most 10 operands, got 11; use 'greedy'"):
        plan_einsum(big, [dense_stats("a", (2,))] * 11, "optimal")
    assert len(plan_einsum(big, [dense_stats("a", (2,))] * 11, "auto").steps) == 10


# ------------------------------------------------------------------------- sparsity awareness
def pattern_flops(path, mats):
    """Exact multiply-adds of nonzero pairs along a matrix-chain path (SciPy on patterns)."""
    cur = [(sp.csr_matrix((sp.csr_matrix(m) != 0).astype(np.float64)), (k, k + 1)) for k, m in enumerate(mats)]
    total = 0.0
    for i, j in path:
        (x, (xl, xr)), (y, (yl, yr)) = cur[i], cur[j]
        if xr != yl:                      # orient the pair as left @ right
            (x, (xl, xr)), (y, (yl, yr)) = (y, (yl, yr)), (x, (xl, xr))
        assert xr == yl
        total += float(np.dot(np.asarray(x.getnnz(axis=0)).ravel(), np.asarray(y.getnnz(axis=1)).ravel()))
        z = x @ y
        z.data[:] = 1.0
        cur = [m for k, m in enumerate(cur) if k not in (i, j)] + [(z, (xl, yr))]
    return total


def test_sparsity_aware_order_beats_dense_size_order():
    # A is nearly empty: (A B) C is cheap, but dense sizes say A (B C).
    a = sp.random(2000, 2000, 5e-6, random_state=1, format="csr")
    b = sp.random(2000, 2000, 0.05, random_state=2, format="csr")
    c = sp.random(2000, 50, 0.05, random_state=3, format="csr")
    spec = parse_einsum("ij,jk,kl->il", [m.shape for m in (a, b, c)])
    sparse_stats = [operand_stats(t, m) for t, m in zip(spec.inputs, (a, b, c))]
    dense_only = [dense_stats(t, m.shape) for t, m in zip(spec.inputs, (a, b, c))]
    aware = plan_einsum(spec, sparse_stats, "optimal")
    naive = plan_einsum(spec, dense_only, "optimal")
    assert aware.path != naive.path
    assert naive.path == [(1, 2), (0, 1)] and aware.path == [(0, 1), (0, 1)]
    mats = [a, b, c]
    assert pattern_flops(aware.path, mats) * 10 < pattern_flops(naive.path, mats)
    assert path_cost(spec, sparse_stats, aware.path) < path_cost(spec, sparse_stats, naive.path)
    assert aware.steps[0].method == "gustavson"
    assert plan_einsum(spec, sparse_stats, "greedy").path == aware.path


# ------------------------------------------------------------------------------ engine rules
def test_engine_rule():
    dd = dense_stats("ij", (50, 60)), dense_stats("jk", (60, 70))
    assert choose_method(*dd, estimate_pair(*dd, "ik"), DEFAULT_DENSE_LIMIT) == "dense"
    s = operand_stats("ij", sp.random(500, 600, 0.001, random_state=1))
    t = operand_stats("jk", sp.random(600, 700, 0.001, random_state=2))
    d = dense_stats("jk", (600, 70))
    assert choose_method(s, d, estimate_pair(s, d, "ik"), DEFAULT_DENSE_LIMIT) == "spmm"
    assert choose_method(s, t, estimate_pair(s, t, "ik"), DEFAULT_DENSE_LIMIT) == "gustavson"
    u = operand_stats("ij", sp.random(500, 600, 0.001, random_state=3))
    assert choose_method(s, u, estimate_pair(s, u, ""), DEFAULT_DENSE_LIMIT) == "dot"
    # small result: "dot" exactly when its fibre merges cost less than Gustavson's work
    e = estimate_pair(s, u, "i")
    cheaper = "dot" if method_cost("dot", e, s, u) < method_cost("gustavson", e, s, u) else "gustavson"
    assert choose_method(s, u, e, DEFAULT_DENSE_LIMIT) == cheaper
    thick = operand_stats("ij", sp.random(100, 120, 0.5, random_state=4))
    thick2 = operand_stats("jk", sp.random(120, 90, 0.5, random_state=5))
    e = estimate_pair(thick, thick2, "ik")
    assert choose_method(thick, thick2, e, DEFAULT_DENSE_LIMIT) == "dense"
    cheaper = "dot" if method_cost("dot", e, thick, thick2) < method_cost("gustavson", e, thick, thick2) \
        else "gustavson"
    assert choose_method(thick, thick2, e, 1000) == cheaper       # memory guard; output small
    tall = operand_stats("ij", sp.random(300, 4, 0.5, random_state=6))
    wide = operand_stats("jk", sp.random(4, 300, 0.5, random_state=7))
    e = estimate_pair(tall, wide, "ik")
    assert choose_method(tall, wide, e, DEFAULT_DENSE_LIMIT) == "dense"
    assert choose_method(tall, wide, e, 1000) == "gustavson"     # memory guard; output large


def test_output_format_rule():
    assert choose_output_format(0.26, 10**6) == "dense"
    assert choose_output_format(0.24, 10**6) == "coo"
    assert choose_output_format(0.9, 2 * DEFAULT_DENSE_LIMIT) == "coo"
    assert choose_output_format(0.9, 2000, "1kB") == "coo"
    assert choose_output_format(0.9, 2000, "1MB") == "dense"
    with pytest.raises(ValueError, match="malformed size"):
        choose_output_format(0.5, 10, "lots")


@pytest.mark.parametrize("density, fmt", [(0.0, "coo"), (0.001, "coo"), (1.0, "dense")])
def test_final_format_follows_density(density, fmt):
    rng = np.random.default_rng(0)
    a = np.where(rng.random((60, 50)) < density, 1.0, 0.0)
    b = np.where(rng.random((50, 40)) < density, 1.0, 0.0)
    plan = make_plan("ij,jk->ik", [COO.from_numpy(a), COO.from_numpy(b)])
    assert plan.out_format == fmt
    if density == 0.0:
        assert plan.est_nnz == 0 and plan.steps[0].est_flops == 0


# ------------------------------------------------------------------------- structure and API
def test_single_operand_and_unary_steps():
    p = make_plan("ijk->ki", [np.ones((2, 3, 4))])
    assert p.steps == () and p.path == [] and p.operand_indices == ("ki",)
    (u,) = p.unary
    assert (u.in_indices, u.out_indices, u.summed, u.diagonal) == ("ijk", "ki", "j", "")
    q = make_plan("ii->i", [np.eye(3)])
    assert q.unary[0].diagonal == "i" and q.unary[0].out_indices == "i"
    r = make_plan("iij,jk,x->ik", [np.ones((2, 2, 3)), np.ones((3, 4)), np.ones(5)])
    assert [(u.operand, u.diagonal, u.summed) for u in r.unary] == [(0, "i", ""), (2, "", "x")]
    assert r.operand_indices == ("ij", "jk", "")
    b = make_plan("ij,jk->ik", [np.ones((3, 1)), np.ones((4, 5))])
    assert b.unary[0].squeezed == "j" and b.operand_indices[0] == "i"
    assert make_plan("ij,jk->ik", [np.ones((2, 3)), np.ones((3, 4))]).unary == ()


def test_explicit_paths_and_bools():
    ops = [np.ones((2, 3)), np.ones((3, 4)), np.ones((4, 5))]
    assert make_plan("ij,jk,kl->il", ops, [(1, 2), (0, 1)]).path == [(1, 2), (0, 1)]
    assert make_plan("ij,jk,kl->il", ops, ["einsum_path", (2, 1), (1, 0)]).path == [(1, 2), (0, 1)]
    assert make_plan("ij,jk,kl->il", ops, [(1, 2), (0, 1)]).optimizer == "explicit"
    assert make_plan("ij,jk,kl->il", ops, True).optimizer == "auto"
    assert make_plan("ij,jk,kl->il", ops, False).optimizer == "left"
    assert make_plan("ij->ji", ops[:1], [(0,)]).steps == ()
    with pytest.raises(ValueError, match=r"path has 1 step\(s\) but 3 operands need 2"):
        make_plan("ij,jk,kl->il", ops, [(0, 1)])
    with pytest.raises(ValueError, match=r"path step 1 \(0, 2\) must name two different positions in \[0, 2\)"):
        make_plan("ij,jk,kl->il", ops, [(0, 1), (0, 2)])
    with pytest.raises(ValueError, match="must name two different positions"):
        make_plan("ij,jk,kl->il", ops, [(1, 1), (0, 1)])
    with pytest.raises(ValueError, match="path step 0 must be a pair"):
        make_plan("ij,jk,kl->il", ops, [(0, 1, 2), (0, 1)])
    with pytest.raises(TypeError, match="optimize must be"):
        make_plan("ij,jk,kl->il", ops, 3)


def test_unknown_optimizer_lists_names_and_registration():
    ops = [np.ones((2, 3)), np.ones((3, 4))]
    with pytest.raises(ValueError, match="unknown optimizer 'fastest'; valid names: auto, greedy, left, optimal"):
        make_plan("ij,jk->ik", ops, "fastest")
    register_optimizer("reverse_left", lambda s: [(len(s.operands) - 2, len(s.operands) - 1)]
                       + [(0, 1)] * (len(s.operands) - 2))
    try:
        p = make_plan("ij,jk,kl->il", ops + [np.ones((4, 5))], "reverse_left")
        assert p.path == [(1, 2), (0, 1)] and p.optimizer == "reverse_left"
    finally:
        del OPTIMIZERS["reverse_left"]
    with pytest.raises(ValueError, match="non-empty string"):
        register_optimizer("", lambda s: [])
    with pytest.raises(TypeError, match="must be callable"):
        register_optimizer("x", 3)


def test_stats_must_match_the_spec():
    spec = parse_einsum("ij,jk->ik", [(2, 3), (3, 4)])
    a, b = dense_stats("ij", (2, 3)), dense_stats("jk", (3, 4))
    with pytest.raises(ValueError, match="expected 2 operand stats for 'ij,jk->ik', got 1"):
        plan_einsum(spec, [a])
    with pytest.raises(ValueError, match=r"stats\[1\] has indices 'kj' but operand 1 is 'jk'"):
        plan_einsum(spec, [a, dense_stats("kj", (4, 3))])
    with pytest.raises(ValueError, match=r"stats\[1\] has shape \(3, 5\) but operand 1 has \(3, 4\)"):
        plan_einsum(spec, [a, dense_stats("jk", (3, 5))])
    with pytest.raises(TypeError, match=r"stats\[0\] must be an OperandStats"):
        plan_einsum(spec, [np.ones((2, 3)), b])
    with pytest.raises(TypeError, match="spec must be an EinsumSpec"):
        plan_einsum("ij,jk->ik", [a, b])
    assert plan_einsum(spec, [a, b], dense_limit="1kB").dense_limit == 1000
    with pytest.warns(DeprecationWarning, match="dense_limit"):  # the old name still works
        assert plan_einsum(spec, [a, b], memory_limit="1kB").dense_limit == 1000
    assert isinstance(a, OperandStats)


def test_plan_is_frozen_and_report_is_readable():
    a = COO.from_numpy(np.where(np.random.default_rng(0).random((30, 40)) < 0.05, 1.0, 0.0))
    p = make_plan("ij,jk,kl->il", [a, np.ones((40, 50)), np.ones((50, 6))])
    with pytest.raises(AttributeError):
        p.steps = ()
    rep = p.report()
    assert "Complete contraction:  ij,jk,kl->il" in rep
    for s in p.steps:
        assert s.subscripts in rep and s.method in rep
    assert f"{p.naive_flops:.3e}" in rep and str(p) == rep
    assert p.naive_flops == 30 * 40 * 50 * 6 * 2


def test_einsum_path_mimics_numpy():
    rng = np.random.default_rng(0)
    ops = [rng.standard_normal(s) for s in [(3, 4), (4, 5), (5, 6), (6, 2)]]
    path, report = einsum_path("ij,jk,kl,lm->im", *ops)
    assert path[0] == "einsum_path" and len(path) == 4 and all(isinstance(p, tuple) for p in path[1:])
    np_path, np_report = np.einsum_path("ij,jk,kl,lm->im", *ops)
    assert isinstance(report, str) and isinstance(np_report, str) and type(path) is type(np_path)
    # NumPy accepts our path and computes the same result with it
    np.testing.assert_allclose(np.einsum("ij,jk,kl,lm->im", *ops, optimize=path),
                               np.einsum("ij,jk,kl,lm->im", *ops))
    ip, _ = einsum_path(ops[0], [0, 1], ops[1], [1, 2], [0, 2])
    assert ip == ["einsum_path", (0, 1)]
    assert einsum_path("ii->i", np.eye(3))[0] == np.einsum_path("ii->i", np.eye(3))[0]
    sparse = sp.random(40, 50, 0.02, random_state=0, format="csr")
    sp_path, sp_report = einsum_path("ij,jk->ik", sparse, COO.from_numpy(np.eye(50)))
    assert sp_path == ["einsum_path", (0, 1)] and "gustavson" in sp_report or "dot" in sp_report
    with pytest.raises(ValueError, match="at least one operand"):
        einsum_path()
    with pytest.raises(ValueError, match="index 'j' has size 4 in operand 0 but size 5"):
        einsum_path("ij,jk", np.ones((3, 4)), np.ones((5, 6)))


@pytest.mark.parametrize("subscripts, shapes", [
    ("ij,jk->ik", [(0, 3), (3, 4)]),
    ("ij,jk->ik", [(2, 0), (0, 4)]),
    (",ij->ij", [(), (3, 3)]),
    ("i,i,i,i,i,i,i->", [(5,)] * 7),
])
def test_empty_extents_scalars_and_many_operands(subscripts, shapes):
    rng = np.random.default_rng(0)
    arrays = [np.where(rng.random(s) < 0.5, 1.0, 0.0) for s in shapes]
    plan = make_plan(subscripts, [COO.from_numpy(a) for a in arrays])
    np.testing.assert_allclose(run_plan(plan, arrays), np.einsum(subscripts, *arrays))
    if 0 in [n for s in shapes for n in s]:
        assert plan.est_nnz == 0 and plan.est_flops == 0


def test_self_contraction_with_small_output_prefers_gustavson():
    """X x X over 3 modes: few products but long fibres; inner products would merge them all."""
    import flexsparse as fs

    x = fs.random((300, 200, 150, 60), 1e-4, seed=0, distribution="powerlaw")
    a, b = operand_stats("ijkl", x), operand_stats("mjkl", x)
    e = estimate_pair(a, b, "im")
    assert e.cells <= 4 * (a.nnz + b.nnz)  # small enough that the old count-only rule said "dot"
    assert method_cost("gustavson", e, a, b) < method_cost("dot", e, a, b)
    assert choose_method(a, b, e, DEFAULT_DENSE_LIMIT) == "gustavson"
