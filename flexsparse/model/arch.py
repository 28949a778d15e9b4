"""Architecture descriptions for the analytical accelerator model (YAML <-> frozen dataclasses).

An :class:`Architecture` is a hierarchy of storage levels (outermost first, e.g. DRAM ->
global buffer -> PE buffers), a block of compute units, a clock, per-operand sparse
features (representation format, metadata bit width, gating or skipping) and a few
numbers that only some designs read (``design_params``).

Energy per access defaults come from the 45 nm, 0.9 V table of M. Horowitz, "Computing's
energy problem (and what we can do about it)", ISSCC 2014 (:data:`HOROWITZ_45NM`): SRAM
energy per byte is interpolated log-log in capacity between the table's 8 KB, 32 KB and
1 MB points; DRAM uses the midpoint of the table's 1.3-2.6 nJ per 64-bit access; a MAC is
an FP16 multiply plus an FP16 add. Every default can be overridden in the YAML.

Loading parses the YAML once into a node tree (``yaml.compose``) so that an unknown key, a
wrong type or a non-positive capacity/bandwidth raises ``ValueError`` naming the key and
its file line. Cost: linear in the size of the YAML text.

>>> arch = load_architecture("dense")
>>> [lv.name for lv in arch.levels]
['DRAM', 'GLB', 'PEbuf']
>>> arch.compute.count
1024
>>> load_architecture_text("name: x\\nclock_ghz: 1\\nbogus: 3\\n")
Traceback (most recent call last):
...
ValueError: <string>: line 3: unknown key 'bogus' in architecture; valid keys: clock_ghz, compute, ...
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from flexsparse._util import atomic_write, parse_bytes

__all__ = [
    "HOROWITZ_45NM",
    "FORMATS",
    "ACTIONS",
    "StorageLevel",
    "ComputeUnit",
    "SparseFeature",
    "Architecture",
    "sram_energy_per_byte",
    "load_architecture",
    "load_architecture_text",
    "dump_architecture",
    "list_presets",
]

#: Horowitz, ISSCC 2014, 45 nm / 0.9 V (pJ). SRAM/DRAM figures are per 64-bit access.
HOROWITZ_45NM: dict[str, float] = {
    "int8_add": 0.03, "int32_add": 0.1, "fp16_add": 0.4, "fp32_add": 0.9,
    "int8_mult": 0.2, "int32_mult": 3.1, "fp16_mult": 1.1, "fp32_mult": 3.7,
    "sram_8KB_64b": 10.0, "sram_32KB_64b": 20.0, "sram_1MB_64b": 100.0,
    "dram_64b_low": 1300.0, "dram_64b_high": 2600.0,
}

#: Representation formats a rank of an operand may use (Sparseloop's vocabulary plus G:H/HSS).
FORMATS = ("uncompressed", "bitmask", "coordinate_list", "offset_pairs", "run_length", "gh", "hss")
#: What a level/compute does with ineffectual (zero-operand) work.
ACTIONS = ("none", "gate", "skip")

_SRAM_POINTS = ((8 * 1024, HOROWITZ_45NM["sram_8KB_64b"] / 8),
                (32 * 1024, HOROWITZ_45NM["sram_32KB_64b"] / 8),
                (1024 * 1024, HOROWITZ_45NM["sram_1MB_64b"] / 8))
DRAM_PJ_PER_BYTE = (HOROWITZ_45NM["dram_64b_low"] + HOROWITZ_45NM["dram_64b_high"]) / 2 / 8
MAC_PJ_FP16 = HOROWITZ_45NM["fp16_mult"] + HOROWITZ_45NM["fp16_add"]


def sram_energy_per_byte(capacity_bytes: int) -> float:
    """SRAM read energy (pJ/byte) for a buffer of ``capacity_bytes``, log-log interpolated.

    >>> round(sram_energy_per_byte(8 * 1024), 3), round(sram_energy_per_byte(1 << 20), 3)
    (1.25, 12.5)
    """
    if capacity_bytes <= 0:
        raise ValueError(f"capacity_bytes must be positive, got {capacity_bytes}")
    pts = _SRAM_POINTS
    if capacity_bytes <= pts[1][0]:
        (c0, e0), (c1, e1) = pts[0], pts[1]
    else:
        (c0, e0), (c1, e1) = pts[1], pts[2]
    slope = math.log(e1 / e0) / math.log(c1 / c0)
    return float(e0 * (capacity_bytes / c0) ** slope)


@dataclass(frozen=True)
class StorageLevel:
    """One storage level. ``capacity`` in bytes (per instance), ``bandwidth`` in bytes/cycle
    (all instances together), energies in pJ per byte read / written."""

    name: str
    capacity: int
    bandwidth: float
    read_energy_pj: float
    write_energy_pj: float
    instances: int = 1
    kind: str = "sram"

    def validate(self) -> None:
        """Raise ``ValueError`` on non-positive sizes or negative energies."""
        for key in ("capacity", "bandwidth", "instances"):
            if not getattr(self, key) > 0:
                raise ValueError(f"level {self.name!r}: {key} must be positive, got {getattr(self, key)}")
        for key in ("read_energy_pj", "write_energy_pj"):
            if getattr(self, key) < 0:
                raise ValueError(f"level {self.name!r}: {key} must be >= 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class ComputeUnit:
    """``count`` MAC units, each ``mac_energy_pj`` per effectual MAC; ``overhead_energy_pj`` is the
    per-MAC cost of the design's selection logic (muxes); gated MACs cost ``gated_energy_pj``."""

    count: int
    mac_energy_pj: float = MAC_PJ_FP16
    overhead_energy_pj: float = 0.0
    gated_energy_pj: float = 0.0

    def validate(self) -> None:
        """Raise ``ValueError`` on a non-positive count or a negative energy."""
        if not self.count > 0:
            raise ValueError(f"compute: count must be positive, got {self.count}")
        for key in ("mac_energy_pj", "overhead_energy_pj", "gated_energy_pj"):
            if getattr(self, key) < 0:
                raise ValueError(f"compute: {key} must be >= 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class SparseFeature:
    """Sparse support for one operand at one level (or ``compute``): representation format,
    metadata bits per stored coordinate/group (0 = derived from the shape) and action."""

    operand: str
    level: str
    format: str = "uncompressed"
    metadata_bits: int = 0
    action: str = "none"

    def validate(self, level_names: tuple[str, ...]) -> None:
        """Check the operand, level, format and action names."""
        if self.operand not in ("A", "B", "Z"):
            raise ValueError(f"sparse feature: operand must be A, B or Z, got {self.operand!r}")
        if self.level not in level_names + ("compute",):
            raise ValueError(f"sparse feature: unknown level {self.level!r}; "
                             f"valid: {', '.join(level_names + ('compute',))}")
        if self.format not in FORMATS:
            raise ValueError(f"sparse feature: unknown format {self.format!r}; valid: {', '.join(FORMATS)}")
        if self.action not in ACTIONS:
            raise ValueError(f"sparse feature: unknown action {self.action!r}; valid: {', '.join(ACTIONS)}")
        if self.metadata_bits < 0:
            raise ValueError(f"sparse feature: metadata_bits must be >= 0, got {self.metadata_bits}")


_DESIGN_PARAM_KEYS = {
    # dstc: outer-product fragment geometry and per-step issue cycles
    "fragment_rows": int, "fragment_cols": int, "array_rows": int, "array_cols": int, "step_overhead_cycles": float,
    # highlight: supported HSS group sizes (lower H, largest upper H)
    "hss_lower_h": int, "hss_upper_h_max": int,
    # extensor: buffer share for each operand tile, tile-pair setup cycles, intersection units
    "tile_pair_cycles": float, "intersect_per_cycle": float,
    # swiftiles / prescient
    "swiftiles_target": float, "swiftiles_samples": int, "prescient_candidates": int,
    # flaash
    "engines": int, "job_overhead_cycles": float, "merge_per_cycle": float,
}


@dataclass(frozen=True)
class Architecture:
    """A whole accelerator: ``levels`` outermost first; ``sparse`` features; ``design_params``."""

    name: str
    clock_ghz: float
    word_bits: int
    levels: tuple[StorageLevel, ...]
    compute: ComputeUnit
    sparse: tuple[SparseFeature, ...] = ()
    design_params: dict[str, Any] = field(default_factory=dict)

    @property
    def word_bytes(self) -> float:
        """Bytes per stored value."""
        return self.word_bits / 8

    @property
    def clock_hz(self) -> float:
        """Clock frequency in Hz."""
        return self.clock_ghz * 1e9

    def level(self, name: str) -> StorageLevel:
        """The storage level called ``name`` (``ValueError`` listing valid names otherwise)."""
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise ValueError(f"architecture {self.name!r} has no level {name!r}; "
                         f"valid: {', '.join(lv.name for lv in self.levels)}")

    def feature(self, operand: str, level: str | None = None) -> SparseFeature | None:
        """The sparse feature of ``operand`` at ``level`` (first match when ``level`` is None)."""
        for f in self.sparse:
            if f.operand == operand and (level is None or f.level == level):
                return f
        return None

    def param(self, key: str, default: Any) -> Any:
        """A design parameter, or ``default`` when the YAML does not set it."""
        return self.design_params.get(key, default)

    def validate(self) -> None:
        """Check every level, the compute block and the sparse features."""
        if not self.clock_ghz > 0:
            raise ValueError(f"architecture {self.name!r}: clock_ghz must be positive, got {self.clock_ghz}")
        if not self.word_bits > 0:
            raise ValueError(f"architecture {self.name!r}: word_bits must be positive, got {self.word_bits}")
        if not self.levels:
            raise ValueError(f"architecture {self.name!r}: needs at least one storage level")
        names = tuple(lv.name for lv in self.levels)
        if len(set(names)) != len(names):
            raise ValueError(f"architecture {self.name!r}: duplicate level names {names}")
        for lv in self.levels:
            lv.validate()
        self.compute.validate()
        for f in self.sparse:
            f.validate(names)
        for key, value in self.design_params.items():
            if key not in _DESIGN_PARAM_KEYS:
                raise ValueError(f"unknown design parameter {key!r}; valid: {', '.join(sorted(_DESIGN_PARAM_KEYS))}")
            if not value > 0:
                raise ValueError(f"design parameter {key!r} must be positive, got {value}")

    def replace(self, **changes: Any) -> Architecture:
        """A copy with some fields changed (validated)."""
        data = {**self.__dict__, **changes}
        out = Architecture(**data)
        out.validate()
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form that :func:`load_architecture_text` reads back unchanged."""
        d = asdict(self)
        d["levels"] = [dict(lv) for lv in d["levels"]]
        d["sparse"] = [dict(f) for f in d["sparse"]]
        d["design_params"] = dict(self.design_params)
        return d


# ---------------------------------------------------------------- YAML parsing with line numbers
_TOP = {"name": str, "clock_ghz": float, "word_bits": int, "levels": list, "compute": dict,
        "sparse": list, "design_params": dict}
_LEVEL = {"name": str, "capacity": "bytes", "bandwidth": float, "read_energy_pj": float,
          "write_energy_pj": float, "instances": int, "kind": str}
_COMPUTE = {"count": int, "mac_energy_pj": float, "overhead_energy_pj": float, "gated_energy_pj": float}
_FEATURE = {"operand": str, "level": str, "format": str, "metadata_bits": int, "action": str}


def _where(src: str, node: yaml.Node) -> str:
    return f"{src}: line {node.start_mark.line + 1}"


def _mapping(node: yaml.Node, src: str, what: str, schema: dict[str, Any]) -> dict[str, tuple[Any, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise ValueError(f"{_where(src, node)}: {what} must be a mapping")
    out: dict[str, tuple[Any, yaml.Node]] = {}
    for knode, vnode in node.value:
        key = knode.value
        if key not in schema:
            raise ValueError(f"{_where(src, knode)}: unknown key {key!r} in {what}; "
                             f"valid keys: {', '.join(sorted(schema))}")
        if key in out:
            raise ValueError(f"{_where(src, knode)}: duplicate key {key!r} in {what}")
        out[key] = (_scalar(vnode, src, f"{what}.{key}", schema[key]), vnode)
    return out


def _scalar(node: yaml.Node, src: str, what: str, kind: Any) -> Any:
    if kind in (list, dict):
        want = yaml.SequenceNode if kind is list else yaml.MappingNode
        if not isinstance(node, want):
            raise ValueError(f"{_where(src, node)}: {what} must be a {'list' if kind is list else 'mapping'}")
        return node
    if not isinstance(node, yaml.ScalarNode):
        raise ValueError(f"{_where(src, node)}: {what} must be a scalar")
    value = yaml.safe_load(node.value) if node.style is None else node.value
    try:
        if kind == "bytes":
            return parse_bytes(value if isinstance(value, (int, str)) else int(value))
        if kind is str:
            return str(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        if kind is int:
            if float(value) != int(value):
                raise TypeError
            return int(value)
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{_where(src, node)}: {what} must be {'a byte size' if kind == 'bytes' else kind.__name__}"
                         f" (> 0 for sizes), got {node.value!r}") from exc


def _positive(entries: dict[str, tuple[Any, yaml.Node]], keys: tuple[str, ...], src: str, what: str) -> None:
    for key in keys:
        if key in entries and not entries[key][0] > 0:
            raise ValueError(f"{_where(src, entries[key][1])}: {what}.{key} must be positive, got {entries[key][0]}")


def _required(entries: dict, keys: tuple[str, ...], node: yaml.Node, src: str, what: str) -> None:
    for key in keys:
        if key not in entries:
            raise ValueError(f"{_where(src, node)}: {what} is missing required key {key!r}")


def _parse(text: str, src: str) -> Architecture:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{src}: invalid YAML: {exc}") from exc
    if root is None:
        raise ValueError(f"{src}: empty architecture file")
    top = _mapping(root, src, "architecture", _TOP)
    _required(top, ("name", "levels", "compute"), root, src, "architecture")
    _positive(top, ("clock_ghz", "word_bits"), src, "architecture")
    levels = []
    for i, lnode in enumerate(top["levels"][0].value):
        e = _mapping(lnode, src, f"levels[{i}]", _LEVEL)
        _required(e, ("name", "capacity", "bandwidth"), lnode, src, f"levels[{i}]")
        _positive(e, ("bandwidth", "instances"), src, f"levels[{i}]")
        kind = e.get("kind", ("dram" if e["name"][0].upper() == "DRAM" else "sram", None))[0]
        cap = e["capacity"][0]
        default = DRAM_PJ_PER_BYTE if kind == "dram" else sram_energy_per_byte(cap)
        read = e.get("read_energy_pj", (default, None))[0]
        levels.append(StorageLevel(name=e["name"][0], capacity=cap, bandwidth=e["bandwidth"][0],
                                   read_energy_pj=read, write_energy_pj=e.get("write_energy_pj", (read, None))[0],
                                   instances=e.get("instances", (1, None))[0], kind=kind))
    c = _mapping(top["compute"][0], src, "compute", _COMPUTE)
    _required(c, ("count",), top["compute"][0], src, "compute")
    _positive(c, ("count",), src, "compute")
    compute = ComputeUnit(**{k: v for k, (v, _) in c.items()})
    feats = []
    if "sparse" in top:
        for i, fnode in enumerate(top["sparse"][0].value):
            f = _mapping(fnode, src, f"sparse[{i}]", _FEATURE)
            _required(f, ("operand", "level"), fnode, src, f"sparse[{i}]")
            feat = SparseFeature(**{k: v for k, (v, _) in f.items()})
            try:
                feat.validate(tuple(lv.name for lv in levels))
            except ValueError as exc:
                raise ValueError(f"{_where(src, fnode)}: {exc}") from None
            feats.append(feat)
    params: dict[str, Any] = {}
    if "design_params" in top:
        p = _mapping(top["design_params"][0], src, "design_params", _DESIGN_PARAM_KEYS)
        _positive(p, tuple(p), src, "design_params")
        params = {k: v for k, (v, _) in p.items()}
    arch = Architecture(name=top["name"][0], clock_ghz=top.get("clock_ghz", (1.0, None))[0],
                        word_bits=top.get("word_bits", (16, None))[0], levels=tuple(levels),
                        compute=compute, sparse=tuple(feats), design_params=params)
    try:
        arch.validate()
    except ValueError as exc:
        raise ValueError(f"{src}: {exc}") from None
    return arch


def load_architecture_text(text: str, source: str = "<string>") -> Architecture:
    """Parse an architecture from YAML text; errors name ``source`` and the line."""
    return _parse(text, source)


def list_presets() -> list[str]:
    """Names of the shipped architecture presets."""
    files = resources.files("flexsparse.model").joinpath("presets").iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".yaml"))


def load_architecture(name_or_path: str | Path) -> Architecture:
    """Load a shipped preset by name (``"dense"``, ``"highlight"``...) or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ValueError(f"architecture file {str(path)!r} does not exist")
        return _parse(path.read_text(), str(path))
    names = list_presets()
    if str(name_or_path) not in names:
        raise ValueError(f"unknown architecture preset {str(name_or_path)!r}; valid: {', '.join(names)}")
    res = resources.files("flexsparse.model").joinpath("presets", f"{name_or_path}.yaml")
    return _parse(res.read_text(), f"presets/{name_or_path}.yaml")


def dump_architecture(arch: Architecture, path: str | Path | None = None) -> str:
    """YAML text of ``arch`` (written atomically to ``path`` when given)."""
    text = yaml.safe_dump(arch.to_dict(), sort_keys=False)
    if path is not None:
        with atomic_write(path, "w") as f:
            f.write(text)
    return text
