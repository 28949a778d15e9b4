"""Every ``parallel=True`` kernel runs one parallel region (see :mod:`flexsparse.kernels.cpu`).

numba turns NumPy array calls such as ``np.zeros`` or ``.sum()`` in a parallel function into
parallel loops of their own; outside the ``prange`` loop each is one more wake-up of the
threads. The check reads the source: calls of that kind may only appear inside a ``prange``
loop, where numba runs them serially.
"""

from __future__ import annotations

import ast
import pathlib

import flexsparse

# NumPy functions and array methods numba parallelises in a parallel=True function
_PARALLEL_NUMPY = {"zeros", "ones", "full", "arange", "linspace", "sum", "prod", "min", "max", "argmin",
                   "argmax", "any", "all", "mean", "std", "var", "dot", "cumsum"}


def _is_parallel_njit(node: ast.FunctionDef) -> bool:
    for dec in node.decorator_list:
        if isinstance(dec, ast.Call) and any(k.arg == "parallel" and isinstance(k.value, ast.Constant)
                                             and k.value.value is True for k in dec.keywords):
            return True
    return False


def _is_prange_loop(node: ast.AST) -> bool:
    return isinstance(node, ast.For) and isinstance(node.iter, ast.Call) and \
        isinstance(node.iter.func, ast.Name) and node.iter.func.id == "prange"


def _outside_prange(nodes: list[ast.stmt]):
    """The AST nodes of ``nodes`` that are not inside a ``prange`` loop."""
    for stmt in nodes:
        if _is_prange_loop(stmt):
            continue
        stack = [stmt]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(child for child in ast.iter_child_nodes(node) if not _is_prange_loop(child))


def _extra_regions(source: str) -> list[tuple[str, int, str]]:
    """``(function, line, call)`` of every parallelised NumPy call outside a ``prange`` loop."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and _is_parallel_njit(node):
            for sub in _outside_prange(node.body):
                if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and \
                        sub.func.attr in _PARALLEL_NUMPY:
                    found.append((node.name, sub.lineno, ast.unparse(sub.func)))
    return found


def test_checker_finds_a_second_region():
    src = '''
@njit(cache=True, parallel=True)
def k(x, n):
    out = np.zeros(n)
    for w in prange(n):
        out[w] = np.zeros(3).sum() + x[w]
    return out.sum()
'''
    assert [(f, call) for f, _, call in _extra_regions(src)] == [("k", "np.zeros"), ("k", "out.sum")]


def test_parallel_kernels_run_one_region():
    root = pathlib.Path(flexsparse.__file__).parent
    found = []
    n_kernels = 0
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        if "parallel=True" not in source:
            continue
        n_kernels += sum(isinstance(n, ast.FunctionDef) and _is_parallel_njit(n) for n in ast.walk(ast.parse(source)))
        found += [f"{path.relative_to(root)}:{line} {fn}: {call}" for fn, line, call in _extra_regions(source)]
    assert n_kernels >= 20  # the checker sees the kernels
    assert not found, "parallelised NumPy calls outside prange:\n" + "\n".join(found)
