"""YAML input for the Sparseloop-compatible model: line-aware mappings and merged input files.

Algorithm: each file is parsed with a SafeLoader whose mappings become :class:`YDict`, a
``dict`` that remembers its file and the line of every key, so any later check can raise
``SpecError("file:line: ...")``. Custom tags (Timeloop v0.4 ``!Component``, ``!Container``,
``!Parallel``...) become a ``YDict`` with the tag under ``"!"``. Several files are merged as
``timeloop-model`` merges its arguments: top-level keys are collected from every file and a key
given again in a later file replaces the earlier one. Cost: linear in the input size.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SpecError", "YDict", "check_keys", "load_files", "load_text", "where"]


class SpecError(ValueError):
    """A problem in the model's input, with the file and line where known."""


class YDict(dict):
    """A mapping that knows its source file and the line of each key (1-based)."""

    src: str = "<input>"
    line: int = 0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lines: dict[str, int] = {}
        self.key_src: dict[str, str] = {}

    def at(self, key: str | None = None) -> str:
        """``"file:line"`` of ``key`` (or of the mapping itself)."""
        line = self.lines.get(key, self.line) if key is not None else self.line
        src = self.key_src.get(key, self.src) if key is not None else self.src
        return f"{src}:{line}" if line else src


def where(obj: Any, key: str | None = None) -> str:
    """Location of ``obj`` (a :class:`YDict`) or ``"<input>"`` for plain Python objects."""
    return obj.at(key) if isinstance(obj, YDict) else "<input>"


def check_keys(d: Any, allowed: Iterable[str], what: str, required: Iterable[str] = ()) -> None:
    """Raise :class:`SpecError` naming the first unknown or missing key of mapping ``d``."""
    if not isinstance(d, dict):
        raise SpecError(f"{where(d)}: {what} must be a mapping, got {type(d).__name__}")
    allowed = set(allowed)
    for k in d:
        if k not in allowed and k != "!":
            raise SpecError(f"{where(d, k)}: unknown key {k!r} in {what}; valid keys: {', '.join(sorted(allowed))}")
    for k in required:
        if k not in d:
            raise SpecError(f"{where(d)}: {what} needs key {k!r}")


_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml parser when available (10x faster)


def _make_loader(src: str) -> type:
    class Loader(_BASE_LOADER):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> YDict:
        loader.flatten_mapping(node)
        out = YDict()
        out.src, out.line = src, node.start_mark.line + 1
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                raise SpecError(f"{src}:{knode.start_mark.line + 1}: mapping keys must be scalars")
            out[key] = loader.construct_object(vnode, deep=True)
            out.lines[key] = knode.start_mark.line + 1
        if node.tag and node.tag.startswith("!") and not node.tag.startswith("tag:yaml.org"):
            out["!"] = node.tag[1:]
        return out

    def construct_tagged(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            d = construct_mapping(loader, node)
            d["!"] = tag_suffix
            return d
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_multi_constructor("!", construct_tagged)
    return Loader


def load_text(text: str, src: str = "<input>") -> Any:
    """Parse one YAML document; mappings become :class:`YDict` tagged with ``src``."""
    try:
        return yaml.load(text, Loader=_make_loader(src))  # noqa: S506 - safe loader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{src}{line}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None


def load_files(paths: Iterable[str | Path | dict]) -> YDict:
    """Merge the top-level keys of several YAML files (later files win), like ``timeloop-model``.

    Entries may also be already-parsed mappings (Python API).
    """
    merged = YDict()
    merged.src = "<merged input>"
    for p in paths:
        if isinstance(p, dict):
            data, src = p, where(p)
        else:
            path = Path(p)
            if not path.is_file():
                raise SpecError(f"input file {str(path)!r} does not exist")
            data, src = load_text(path.read_text(), str(path)), str(path)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise SpecError(f"{src}: the top level of an input file must be a mapping")
        for k, v in data.items():
            merged[k] = v
            merged.lines[k] = data.lines.get(k, 0) if isinstance(data, YDict) else 0
            merged.key_src[k] = src
    return merged
