"""Config paths as users write them (``streams[1].destination.table_id``) and where they sit in the YAML file.

``yaml.safe_load`` forgets line numbers, so the file is also composed into nodes and every path is
mapped to the line of its key and of its value; error messages then point at the line to edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

PathParts = Sequence[str | int]


def format_path(parts: PathParts) -> str:
    """``("engine", "runner", "config", "max_workers")`` -> ``engine.runner.config.max_workers``; indexes as ``[i]``."""
    out = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):  # YAML reads a bare `on:` key as True
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class Position:
    """1-based lines of a mapping key (or list item) and of its value.

    ``block_scalar`` says the value is a ``|`` or ``>`` block, whose text starts on the line after
    ``value_line``: a line number inside the value (a transform's code) is then counted from there.
    """

    key_line: int
    value_line: int
    block_scalar: bool = False

    @property
    def text_line(self) -> int:
        """The line where the value's text begins."""
        return self.value_line + 1 if self.block_scalar else self.value_line


#: positions mapped at most; beyond, aliases are expanding the document (the strict reader rejects it first)
MAX_POSITIONS = 200_000


def yaml_positions(text: str) -> dict[tuple[str | int, ...], Position]:
    """Map every path of the YAML document in ``text`` to its position; {} when it does not compose.

    Keys are the scalar text of mapping keys (``str``) and list indexes (``int``). Merge keys
    (``<<: *anchor``) contribute the merged entries without overriding explicit ones.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return {}
    return node_positions(root)


def node_positions(root: yaml.Node | None) -> dict[tuple[str | int, ...], Position]:
    """:func:`yaml_positions` of an already composed document.

    Paths through aliases are mapped too, so an alias bomb would make this walk exponential: it
    stops after :data:`MAX_POSITIONS` nodes, whatever the document (``bizon_fast.config.yamlstrict``
    rejects such a document before it gets here, with a message; this bound only keeps the walk safe).
    """
    positions: dict[tuple[str | int, ...], Position] = {}
    if root is not None:
        _walk(root, (), positions, depth=0, budget=[MAX_POSITIONS])
    return positions


def _position(key_node: yaml.Node, value_node: yaml.Node) -> Position:
    block = isinstance(value_node, yaml.ScalarNode) and value_node.style in ("|", ">")
    return Position(key_node.start_mark.line + 1, value_node.start_mark.line + 1, block)


def _walk(
    node: yaml.Node,
    path: tuple[str | int, ...],
    out: dict[tuple[str | int, ...], Position],
    depth: int,
    budget: list[int],
) -> None:
    budget[0] -= 1
    if depth > 64 or budget[0] < 0:  # recursive anchors or an alias bomb; no real config nests this deep
        return
    if isinstance(node, yaml.MappingNode):
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            if key == "<<":
                merged.append(value_node)
                continue
            child = (*path, key)
            out[child] = _position(key_node, value_node)
            _walk(value_node, child, out, depth + 1, budget)
        for value_node in merged:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                extra: dict[tuple[str | int, ...], Position] = {}
                _walk(source, path, extra, depth + 1, budget)
                for child, pos in extra.items():
                    out.setdefault(child, pos)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            out[child] = _position(item, item)
            _walk(item, child, out, depth + 1, budget)


def lookup(data: Any, parts: PathParts) -> tuple[bool, Any]:
    """(found, value) at ``parts`` inside nested dicts and lists."""
    for part in parts:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_dict or in_list):
            return False, None
        data = data[part]
    return True, data
