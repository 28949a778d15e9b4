"""Architecture, energy table and problem of a Sparseloop/Timeloop input.

* Architecture: Timeloop v0.3 trees (``subtree``/``local``, names with ``[0..N-1]`` ranges
  multiplying the instance count), v0.2 flat ``storage``/``arithmetic`` lists and v0.4
  ``nodes`` lists (``!Container``/``!Component`` with ``spatial: {meshX, meshY}``) become one
  list of storage levels, innermost first, plus the compute level. Attribute semantics follow
  Timeloop: ``block_size`` words per vector access (derived from ``width / datawidth /
  cluster-size`` when absent), size in words = ``depth * block_size`` (or ``entries`` or
  ``sizeKB``), meshX/meshY from the instance count.
* ERT: Accelergy v0.3 ``tables``; a component's action energy is the largest over its argument
  variants; Sparseloop actions (``gated_read``, ``metadata_read``...) map to ERT actions by the
  same priority lists as Timeloop. Missing entries fall back to the Horowitz 45 nm table
  (``flexsparse.model.arch``) scaled to the word width.
* Problem: dimensions, coefficients, data-spaces with projections (sums of
  ``coefficient * dimension``), instance bounds and densities.

Cost: linear in the input size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from flexsparse.model.sparseloop.density import Density, make_density
from flexsparse.model.sparseloop.yamlio import SpecError, YDict, check_keys, where

__all__ = ["Arch", "ComputeLevel", "DataSpace", "Problem", "StorageLevel", "apply_ert", "parse_arch",
           "parse_problem", "STORAGE_ACTIONS", "COMPUTE_ACTIONS"]

# Sparseloop action -> ERT action names, first match wins (Timeloop's priority lists).
STORAGE_ACTIONS: dict[str, tuple[str, ...]] = {
    "random_read": ("random_read", "read"),
    "random_fill": ("random_fill", "write"),
    "random_update": ("random_update", "random_fill", "write"),
    "gated_read": ("gated_read", "idle", "read"),
    "gated_fill": ("gated_fill", "gated_write", "idle", "write"),
    "gated_update": ("gated_update", "gated_write", "idle", "write"),
    "skipped_read": ("skipped_read", "gated_read", "idle", "read"),
    "skipped_fill": ("skipped_fill", "skipped_write", "gated_write", "idle", "write"),
    "skipped_update": ("skipped_update", "skipped_write", "gated_write", "idle", "write"),
    "random_metadata_read": ("random_metadata_read", "metadata_read", "metadata_idle", "idle"),
    "gated_metadata_read": ("gated_metadata_read", "metadata_idle", "metadata_read"),
    "skipped_metadata_read": ("skipped_metadata_read", "metadata_idle", "metadata_read"),
    "random_metadata_fill": ("random_metadata_fill", "metadata_write", "metadata_idle", "idle"),
    "gated_metadata_fill": ("gated_metadata_fill", "gated_metadata_write", "metadata_idle", "metadata_write"),
    "skipped_metadata_fill": ("skipped_metadata_fill", "skipped_metadata_write", "metadata_idle", "metadata_write"),
    "random_metadata_update": ("random_metadata_update", "metadata_write", "metadata_idle", "idle"),
    "gated_metadata_update": ("gated_metadata_update", "gated_metadata_write", "metadata_idle", "metadata_write"),
    "skipped_metadata_update": ("skipped_metadata_update", "skipped_metadata_write", "metadata_idle",
                                "metadata_write"),
    "decompression_count": ("decompression_count",),
    "compression_count": ("compression_count",),
}
COMPUTE_ACTIONS: dict[str, tuple[str, ...]] = {
    "random_compute": ("mac_random", "mult_random", "mac", "mult", "compute"),
    "skipped_compute": ("mac_skipped", "mult_skipped", "compute_skipped", "mac_gated", "mult_gated",
                        "compute_gated", "mac", "mult", "compute"),
    "gated_compute": ("mac_gated", "mult_gated", "compute_gated", "mac", "mult", "compute"),
}

_BUFFER_CLASSES = ("DRAM", "SRAM", "regfile", "smartbuffer", "storage")
_COMPUTE_CLASSES = ("mac", "intmac", "fpmac", "compute")
_NETWORK_CLASSES = ("XY_NoC", "Legacy", "ReductionTree", "SimpleMulticast")
_COMPONENT_KEYS = {"name", "class", "subclass", "attributes", "required_actions", "actions", "spatial",
                   "constraints", "enabled", "area_share", "energy_scale", "area_scale", "!"}


@dataclass
class StorageLevel:
    """One storage level (all its instances share these specs)."""

    name: str
    cls: str
    instances: int
    mesh_x: int
    mesh_y: int
    word_bits: int = 16
    block_size: int = 1
    cluster_size: int = 1
    size: Optional[int] = None          # words per instance (None: unbounded, e.g. DRAM)
    md_word_bits: int = 0               # default metadata word width (metadata_datawidth)
    md_storage_width: int = 0
    md_storage_depth: int = 0
    md_block_size: int = 1
    read_bandwidth: Optional[float] = None
    write_bandwidth: Optional[float] = None
    shared_bandwidth: Optional[float] = None
    technology: str = "SRAM"
    multiple_buffering: float = 1.0
    decompression_supported: bool = False
    compression_supported: bool = False
    overbooking: bool = False           # Tailors: tiles may exceed the capacity, the overflow streams
    energy: dict[str, float] = field(default_factory=dict)   # Sparseloop action -> pJ per vector access
    energy_source: str = "default"

    @property
    def fanout_key(self) -> str:
        """Name used for the level in tables."""
        return self.name


@dataclass
class ComputeLevel:
    """The arithmetic level."""

    name: str
    instances: int
    mesh_x: int
    mesh_y: int
    word_bits: int = 16
    energy: dict[str, float] = field(default_factory=dict)
    energy_source: str = "default"


@dataclass
class Arch:
    """Storage levels innermost first, and the compute level."""

    storage: list[StorageLevel]
    compute: ComputeLevel

    def level_index(self, name: str, what: str) -> int:
        """Index of the storage level called ``name`` (error lists the valid names)."""
        for i, lv in enumerate(self.storage):
            if lv.name == name:
                return i
        raise SpecError(f"{what}: unknown storage level {name!r}; valid: {', '.join(s.name for s in self.storage)}")

    def fanout(self, i: int) -> tuple[int, int]:
        """(X, Y) fanout from storage level ``i`` to the level below it (compute for ``i == 0``)."""
        inner = self.compute if i == 0 else self.storage[i - 1]
        outer = self.storage[i]
        if inner.mesh_x % outer.mesh_x or inner.mesh_y % outer.mesh_y:
            raise SpecError(f"architecture: {inner.name} mesh {inner.mesh_x}x{inner.mesh_y} is not a multiple of "
                            f"{outer.name} mesh {outer.mesh_x}x{outer.mesh_y}")
        return inner.mesh_x // outer.mesh_x, inner.mesh_y // outer.mesh_y


def _range_size(name: str, loc: str) -> int:
    m = re.search(r"\[(\d+)\.\.(\d+)\]\s*$", name)
    if not m:
        return 1
    lo, hi = int(m.group(1)), int(m.group(2))
    if hi < lo:
        raise SpecError(f"{loc}: bad instance range in name {name!r}")
    return hi - lo + 1


def _base(name: str) -> str:
    return name.split("[", 1)[0]


def _num(attrs: dict, keys: tuple[str, ...], kind=float, loc: str = "") -> Any:
    for k in keys:
        if k in attrs and attrs[k] is not None and not isinstance(attrs[k], str):
            try:
                return kind(attrs[k])
            except (TypeError, ValueError):
                raise SpecError(f"{loc}: attribute {k!r} must be a number, got {attrs[k]!r}") from None
        if k in attrs and isinstance(attrs[k], str):
            try:
                return kind(float(attrs[k]))
            except ValueError:
                if attrs[k] in ("must_specify",):
                    continue
                raise SpecError(f"{loc}: attribute {k!r} must be a number, got {attrs[k]!r}") from None
    return None


def _mesh(instances: int, attrs: dict, name: str, loc: str) -> tuple[int, int]:
    mx = _num(attrs, ("meshX",), int, loc)
    my = _num(attrs, ("meshY",), int, loc)
    if mx is not None and my is not None:
        if mx * my != instances:
            raise SpecError(f"{loc}: {name}: meshX * meshY = {mx * my} but there are {instances} instances")
        return mx, my
    if mx is not None:
        if instances % mx:
            raise SpecError(f"{loc}: {name}: {instances} instances are not a multiple of meshX {mx}")
        return mx, instances // mx
    if my is not None:
        if instances % my:
            raise SpecError(f"{loc}: {name}: {instances} instances are not a multiple of meshY {my}")
        return instances // my, my
    return instances, 1


def _storage(name: str, cls: str, attrs: dict, n: int, loc: str) -> StorageLevel:
    inst = _num(attrs, ("instances",), int, loc) or n
    word_bits = _num(attrs, ("word-bits", "word_width", "datawidth"), int, loc) or 16
    block = _num(attrs, ("block-size", "block_size", "n_words"), int, loc)
    cluster = _num(attrs, ("cluster-size", "cluster_size"), int, loc)
    width = _num(attrs, ("width", "memory_width", "data_storage_width"), int, loc)
    if width is not None and word_bits:
        if block is not None and cluster is None:
            cluster = max(1, width // (word_bits * block))
        elif cluster is not None and block is None:
            block = max(1, width // cluster // word_bits)
        elif block is None:
            block, cluster = max(1, width // word_bits), 1
    block, cluster = block or 1, cluster or 1
    size = None
    entries = _num(attrs, ("entries",), int, loc)
    depth = _num(attrs, ("depth", "memory_depth", "data_storage_depth"), int, loc)
    kb = _num(attrs, ("sizeKB",), float, loc)
    if entries is not None:
        size = entries
    elif depth is not None:
        size = depth * block
    elif kb is not None:
        size = int(kb * 1024 * 8 / word_bits)
    md_block = _num(attrs, ("metadata_block_size",), int, loc) or 1
    tech = "DRAM" if "DRAM" in cls else "SRAM"
    if str(attrs.get("technology", "")) == "DRAM":
        tech = "DRAM"
    bw = _num(attrs, ("bandwidth",), float, loc)
    mx, my = _mesh(inst, attrs, name, loc)
    lv = StorageLevel(
        name=name, cls=cls, instances=inst, mesh_x=mx, mesh_y=my, word_bits=word_bits, block_size=block,
        cluster_size=cluster, size=size,
        md_word_bits=_num(attrs, ("metadata_datawidth", "metadata_word_bits"), int, loc) or 0,
        md_storage_width=_num(attrs, ("metadata_storage_width",), int, loc) or 0,
        md_storage_depth=_num(attrs, ("metadata_storage_depth",), int, loc) or 0,
        md_block_size=md_block,
        read_bandwidth=_num(attrs, ("read_bandwidth",), float, loc) or (bw / 2 if bw else None),
        write_bandwidth=_num(attrs, ("write_bandwidth",), float, loc) or (bw / 2 if bw else None),
        shared_bandwidth=_num(attrs, ("shared_bandwidth",), float, loc),
        technology=tech,
        multiple_buffering=_num(attrs, ("multiple-buffering", "multiple_buffering"), float, loc) or 1.0,
        decompression_supported=bool(attrs.get("decompression_supported", False)),
        compression_supported=bool(attrs.get("compression_supported", False)),
        overbooking=bool(attrs.get("overbooking", attrs.get("allow_overbooking", False))),
    )
    if tech == "DRAM":
        lv.size = None
    return lv


def _compute(name: str, attrs: dict, n: int, loc: str) -> ComputeLevel:
    inst = _num(attrs, ("instances",), int, loc) or n
    mx, my = _mesh(inst, attrs, name, loc)
    return ComputeLevel(name=name, instances=inst, mesh_x=mx, mesh_y=my,
                        word_bits=_num(attrs, ("word-bits", "datawidth"), int, loc) or 16)


def _component(node: Any, n: int, storages: list, computes: list) -> None:
    check_keys(node, _COMPONENT_KEYS, "an architecture component", required=("name",))
    name, cls = str(node["name"]), str(node.get("class", node.get("subclass", "")))
    loc = where(node, "name")
    attrs = node.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise SpecError(f"{where(node, 'attributes')}: attributes must be a mapping")
    count = n * _range_size(name, loc)
    if any(c in cls for c in _BUFFER_CLASSES):
        storages.append(_storage(_base(name), cls, attrs, count, loc))
    elif any(c in cls for c in _COMPUTE_CLASSES):
        computes.append(_compute(_base(name), attrs, count, loc))
    elif any(c in cls for c in _NETWORK_CLASSES):
        pass  # networks carry no energy in the legacy model without wire energy
    else:
        raise SpecError(f"{where(node, 'class')}: component {name!r} has class {cls!r}, which is neither storage "
                        f"({', '.join(_BUFFER_CLASSES)}) nor compute ({', '.join(_COMPUTE_CLASSES)})")


def parse_arch(node: Any) -> Arch:
    """The architecture tree/list under the ``architecture`` key."""
    if not isinstance(node, dict):
        raise SpecError(f"{where(node)}: 'architecture' must be a mapping")
    storages: list[StorageLevel] = []   # outermost first while walking
    computes: list[ComputeLevel] = []
    if "nodes" in node:                                   # v0.4
        check_keys(node, {"version", "nodes", "attributes"}, "architecture (v0.4)")
        mult = 1
        for item in node["nodes"]:
            if not isinstance(item, dict):
                raise SpecError(f"{where(node, 'nodes')}: each architecture node is a mapping")
            tag = item.get("!", "Component")
            if tag in ("Container", "Hierarchical"):
                sp = item.get("spatial") or {}
                mult *= int(sp.get("meshX", 1)) * int(sp.get("meshY", 1))
                continue
            if tag in ("Parallel", "Pipelined", "Nothing"):
                continue
            attrs = dict(item.get("attributes") or {})
            sp = item.get("spatial") or {}
            count = mult * int(sp.get("meshX", 1)) * int(sp.get("meshY", 1))
            item = YDict(item)
            item.update({"attributes": attrs})
            _component(item, count, storages, computes)
            mult = count
    elif "subtree" in node:                               # v0.3 tree
        check_keys(node, {"version", "subtree", "local", "name", "attributes"}, "architecture")
        mult, cur = 1, node
        while "subtree" in cur:
            subs = cur["subtree"]
            if not isinstance(subs, list) or len(subs) != 1:
                raise SpecError(f"{where(cur, 'subtree')}: a subtree is a list with exactly one element")
            cur = subs[0]
            check_keys(cur, {"name", "local", "subtree", "attributes", "!"}, "an architecture subtree",
                       required=("name",))
            mult *= _range_size(str(cur["name"]), where(cur, "name"))
            local = cur.get("local") or []
            if not isinstance(local, list):
                raise SpecError(f"{where(cur, 'local')}: 'local' is a list of components")
            for comp in local:
                _component(comp, mult, storages, computes)
    elif "storage" in node:                               # v0.2 flat lists
        check_keys(node, {"version", "storage", "arithmetic"}, "architecture (v0.2)", required=("arithmetic",))
        for comp in reversed(node["storage"]):
            attrs = {k: v for k, v in comp.items() if k not in ("name", "class")}
            storages.append(_storage(_base(str(comp["name"])), str(comp.get("class", "SRAM")), attrs,
                                     int(attrs.get("instances", 1)), where(comp)))
        ar = node["arithmetic"]
        computes.append(_compute(_base(str(ar["name"])), ar, int(ar.get("instances", 1)), where(ar)))
    else:
        raise SpecError(f"{where(node)}: architecture needs 'subtree' (v0.3), 'nodes' (v0.4) or 'storage' (v0.2)")
    if len(computes) != 1:
        raise SpecError(f"{where(node)}: the architecture needs exactly one compute component, found {len(computes)}")
    if not storages:
        raise SpecError(f"{where(node)}: the architecture has no storage level")
    arch = Arch(storage=storages[::-1], compute=computes[0])
    for i in range(len(arch.storage)):
        arch.fanout(i)
    return arch


# ----------------------------------------------------------------------------- energy

def apply_ert(arch: Arch, ert: Any) -> list[str]:
    """Set per-action energies from an ERT (``{ERT: {version, tables}}`` or the inner mapping).

    Returns the names of levels left on default energies.
    """
    tables: dict[str, dict[str, float]] = {}
    if ert is not None:
        body = ert.get("ERT", ert) if isinstance(ert, dict) else None
        if not isinstance(body, dict) or "tables" not in body:
            raise SpecError(f"{where(ert)}: an ERT is a mapping with 'tables'")
        raw = body["tables"]
        items = raw.items() if isinstance(raw, dict) else [(t.get("name"), t.get("actions")) for t in raw]
        for name, actions in items:
            comp = re.sub(r"\[\d+\.\.\d+\]", "", str(name)).split(".")[-1]
            energies: dict[str, float] = {}
            acts = actions.items() if isinstance(actions, dict) else [(a["name"], a) for a in actions]
            for act, entry in acts:
                vals = entry if isinstance(entry, list) else [entry]
                best = 0.0
                for v in vals:
                    e = v.get("energy", 0.0) if isinstance(v, dict) else v
                    best = max(best, float(e))
                energies[str(act)] = max(best, energies.get(str(act), 0.0))
            tables[comp] = energies
    defaults = []
    for lv in arch.storage:
        ent = tables.get(lv.name)
        if ent is None:
            defaults.append(lv.name)
        # Timeloop: actions without an ERT entry cost the component's most expensive action
        # (per cluster member) for data accesses and nothing for gated/skipped/metadata ones.
        dflt = max(ent.values()) / lv.cluster_size if ent else _default_storage_energy(lv)
        lv.energy = _resolve(ent or {}, STORAGE_ACTIONS, dflt, ("random_read", "random_fill", "random_update"))
        lv.energy_source = "ERT" if ent is not None else "default"
    ent = tables.get(arch.compute.name)
    if ent is None:
        defaults.append(arch.compute.name)
    dflt = _default_compute_energy(arch.compute)
    arch.compute.energy = _resolve(ent or {}, COMPUTE_ACTIONS, dflt, ("random_compute",))
    arch.compute.energy_source = "ERT" if ent is not None else "default"
    return defaults


def _resolve(entries: dict[str, float], mapping: dict[str, tuple[str, ...]], default: float,
             data_actions: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for action, names in mapping.items():
        val = next((entries[n] for n in names if n in entries), None)
        out[action] = float(val) if val is not None else (default if action in data_actions else 0.0)
    return out


def _default_storage_energy(lv: StorageLevel) -> float:
    """Horowitz 45 nm per vector access: DRAM per byte, SRAM interpolated on capacity."""
    from flexsparse.model.arch import DRAM_PJ_PER_BYTE, sram_energy_per_byte
    nbytes = lv.word_bits * lv.block_size / 8
    if lv.technology == "DRAM" or lv.size is None:
        return DRAM_PJ_PER_BYTE * nbytes
    if lv.size == 0:
        return 0.0
    return sram_energy_per_byte(max(1, int(lv.size * lv.word_bits / 8 * lv.instances))) * nbytes


def _default_compute_energy(c: ComputeLevel) -> float:
    """Horowitz 45 nm multiply-add at the compute word width (int8 up to 8 bits, fp16 up to 16, else fp32)."""
    from flexsparse.model.arch import HOROWITZ_45NM as H
    if c.word_bits <= 8:
        return H["int8_mult"] + H["int8_add"]
    if c.word_bits <= 16:
        return H["fp16_mult"] + H["fp16_add"]
    return H["fp32_mult"] + H["fp32_add"]


# ----------------------------------------------------------------------------- problem

@dataclass
class DataSpace:
    """A tensor: ranks are sums of (coefficient, dimension index) terms."""

    name: str
    ranks: tuple[tuple[tuple[int, int], ...], ...]
    read_write: bool
    dims: frozenset[int]

    def extents(self, dim_ext: list[int] | tuple[int, ...]) -> tuple[int, ...]:
        """Box extent per rank for an operation-space box of ``dim_ext`` points per dimension."""
        return tuple(sum(c * (dim_ext[d] - 1) for c, d in rank) + 1 for rank in self.ranks)

    def size(self, dim_ext) -> int:
        """Elements of that box."""
        return math.prod(self.extents(dim_ext))

    def offset(self, dim_shift) -> tuple[int, ...]:
        """Translation of the box when the operation space moves by ``dim_shift``."""
        return tuple(sum(c * dim_shift[d] for c, d in rank) for rank in self.ranks)


@dataclass
class Problem:
    """Dimensions with bounds, data-spaces and their density models."""

    name: str
    dims: list[str]
    bounds: list[int]
    dataspaces: list[DataSpace]
    densities: list[Density]

    def dim_index(self, name: str, what: str) -> int:
        """Index of dimension ``name``."""
        try:
            return self.dims.index(name)
        except ValueError:
            raise SpecError(f"{what}: unknown dimension {name!r}; valid: {', '.join(self.dims)}") from None

    def ds_index(self, name: str, what: str) -> int:
        """Index of data-space ``name``."""
        for i, ds in enumerate(self.dataspaces):
            if ds.name == name:
                return i
        raise SpecError(f"{what}: unknown data-space {name!r}; valid: {', '.join(d.name for d in self.dataspaces)}")

    @property
    def macs(self) -> int:
        """Points of the operation space."""
        return math.prod(self.bounds)


def parse_problem(node: Any, base_dir: Optional[Path] = None) -> Problem:
    """The ``problem`` key: ``shape`` and ``instance`` (Timeloop v0.3 form)."""
    check_keys(node, {"shape", "instance"}, "problem", required=("shape", "instance"))
    shape, inst = node["shape"], node["instance"]
    check_keys(shape, {"name", "dimensions", "coefficients", "data-spaces", "data_spaces"}, "problem shape",
               required=("dimensions",))
    dims = [str(d) for d in shape["dimensions"]]
    if len(set(dims)) != len(dims):
        raise SpecError(f"{where(shape, 'dimensions')}: repeated dimension names")
    coeffs: dict[str, float] = {}
    for c in shape.get("coefficients") or []:
        check_keys(c, {"name", "default"}, "a coefficient", required=("name",))
        coeffs[str(c["name"])] = c.get("default", 1)
    if not isinstance(inst, dict):
        raise SpecError(f"{where(node, 'instance')}: problem instance must be a mapping")
    bounds = []
    for d in dims:
        if d not in inst:
            raise SpecError(f"{where(inst)}: problem instance lacks a bound for dimension {d!r}")
        b = inst[d]
        if not isinstance(b, int) or b < 1:
            raise SpecError(f"{where(inst, d)}: bound of {d!r} must be a positive integer, got {b!r}")
        bounds.append(b)
    for k, v in inst.items():
        if k in dims or k in ("densities", "commonDensity"):
            continue
        if k in coeffs:
            coeffs[k] = v
        else:
            raise SpecError(f"{where(inst, k)}: unknown key {k!r} in problem instance; valid: dimensions "
                            f"{', '.join(dims)}, coefficients {', '.join(coeffs) or '-'}, densities")
    dspec = shape.get("data-spaces", shape.get("data_spaces"))
    if not isinstance(dspec, list) or not dspec:
        raise SpecError(f"{where(shape)}: problem shape needs a non-empty 'data-spaces' list")
    spaces = []
    for ds in dspec:
        check_keys(ds, {"name", "projection", "read-write", "read_write"}, "a data-space",
                   required=("name", "projection"))
        ranks = []
        for rank in ds["projection"]:
            terms = []
            for term in rank if isinstance(rank, list) else [[rank]]:
                term = term if isinstance(term, list) else [term]
                if not 1 <= len(term) <= 2:
                    raise SpecError(f"{where(ds, 'projection')}: a projection term is [dimension] or "
                                    "[dimension, coefficient]")
                if str(term[0]) not in dims:
                    raise SpecError(f"{where(ds, 'projection')}: projection of {ds['name']!r} uses unknown "
                                    f"dimension {term[0]!r}; valid: {', '.join(dims)}")
                coef = 1
                if len(term) == 2:
                    if isinstance(term[1], (int, float)):
                        coef = term[1]
                    elif str(term[1]) in coeffs:
                        coef = coeffs[str(term[1])]
                    else:
                        raise SpecError(f"{where(ds, 'projection')}: unknown coefficient {term[1]!r}")
                terms.append((int(coef), dims.index(str(term[0]))))
            ranks.append(tuple(terms))
        spaces.append(DataSpace(str(ds["name"]), tuple(ranks), bool(ds.get("read-write", ds.get("read_write", False))),
                                frozenset(d for r in ranks for _, d in r if _ != 0)))
    dens_node = inst.get("densities") or {}
    common = inst.get("commonDensity")
    densities = []
    for ds in spaces:
        if ds.name in dens_node:
            spec = dens_node[ds.name]
            loc = where(dens_node, ds.name)
        elif common is not None:
            spec, loc = common, where(inst, "commonDensity")
        else:
            spec, loc = 1.0, where(inst)
        try:
            dens = make_density(spec, loc, base_dir)
            dens.bind(ds.size(bounds), ds.extents(bounds))
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        densities.append(dens)
    for k in dens_node:
        if k not in [d.name for d in spaces]:
            raise SpecError(f"{where(dens_node, k)}: density for unknown data-space {k!r}")
    return Problem(str(shape.get("name", "problem")), dims, bounds, spaces, densities)
