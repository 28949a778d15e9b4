"""Shared inputs of the Sparseloop-compatible model tests: a small GEMM accelerator as YAML files."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest

ARCH = """\
architecture:
  version: 0.3
  subtree:
  - name: sys
    local:
    - name: DRAM
      class: DRAM
      attributes: {width: 64, datawidth: 16}
    - name: GLB
      class: SRAM
      attributes: {depth: 512, width: 64, datawidth: 16, read_bandwidth: 4, write_bandwidth: 4}
    subtree:
    - name: PE[0..3]
      local:
      - name: RF
        class: regfile
        attributes: {depth: 64, width: 16, datawidth: 16}
      - name: MAC
        class: intmac
        attributes: {datawidth: 16}
"""
PROBLEM = """\
problem:
  shape:
    name: gemm
    dimensions: [M, N, K]
    data-spaces:
    - {name: A, projection: [[[M]], [[K]]]}
    - {name: B, projection: [[[K]], [[N]]]}
    - {name: Z, projection: [[[M]], [[N]]], read-write: true}
  instance: {M: 8, N: 8, K: 8}
"""
MAPPING = """\
mapping:
- {target: RF, type: temporal, factors: M=2 N=2 K=8, permutation: KNM}
- {target: GLB, type: spatial, factors: M=4 N=1 K=1, permutation: MNK}
- {target: GLB, type: temporal, factors: M=1 N=4 K=1, permutation: NMK}
- {target: DRAM, type: temporal, factors: M=1 N=1 K=1, permutation: MNK}
"""
ERT = """\
ERT:
  version: 0.3
  tables:
  - name: sys.DRAM
    actions:
    - {name: read, arguments: null, energy: 100}
    - {name: write, arguments: null, energy: 100}
  - name: sys.GLB
    actions:
    - {name: read, arguments: {address_delta: 0}, energy: 4}
    - {name: read, arguments: {address_delta: 1}, energy: 10}
    - {name: write, arguments: null, energy: 12}
  - name: sys.PE[0..3].RF
    actions:
    - {name: read, arguments: null, energy: 1}
    - {name: write, arguments: null, energy: 1.5}
    - {name: idle, arguments: null, energy: 0.1}
  - name: sys.PE[0..3].MAC
    actions:
    - {name: mac_random, arguments: null, energy: 2}
    - {name: mac_gated, arguments: null, energy: 0.2}
"""


def write_spec(tmp_path, **parts):
    """Write the four standard files (overridable by keyword) and return their paths."""
    texts = {"arch": ARCH, "problem": PROBLEM, "mapping": MAPPING, "ert": ERT, **parts}
    paths = []
    for name, text in texts.items():
        if text is None:
            continue
        p = tmp_path / f"{name}.yaml"
        p.write_text(textwrap.dedent(text))
        paths.append(p)
    return paths


@pytest.fixture
def sl():
    """The YAML texts and ``write(tmp_path, **overrides)`` (writes the files, returns their paths)."""
    return SimpleNamespace(ARCH=ARCH, PROBLEM=PROBLEM, MAPPING=MAPPING, ERT=ERT, write=write_spec)
