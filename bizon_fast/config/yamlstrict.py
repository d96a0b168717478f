"""Read a pipeline YAML strictly and within bounds, before anything can expand it.

``yaml.safe_load`` shares aliased objects, so a "billion laughs" document loads in kilobytes -- but
every later step (legacy env substitution, reference resolution, validation, the job fingerprint's
JSON, the path-to-line mapper) walks the data as a tree and expands every alias, growing to
gigabytes before any error could be shown. So the document is composed once into nodes and measured
with memoisation over node identity, in time linear in the text, and an expansion no real config
reaches is rejected before anything expands it.

The same walk rejects what ``safe_load`` silently accepts and the user did not mean: a duplicate
key (the last one wins, so a setting is lost without a word) and a recursive alias (no later step
can walk it). Nesting is bounded while composing, which PyYAML does recursively.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from bizon_fast.config.yamlpaths import Position, format_path, node_positions
from bizon_fast.errors import ConfigError

#: nesting levels; real configs nest about 10 deep, and PyYAML composes recursively
MAX_DEPTH = 100
#: nodes of the document once aliases are expanded (only documents with aliases are limited)
MAX_EXPANDED_NODES = 100_000
#: characters of scalar text once aliases are expanded (a long string aliased many times)
MAX_EXPANDED_CHARS = 10_000_000

MERGE_TAG = "tag:yaml.org,2002:merge"
_MERGE = object()  # the merge key's identity among keys: no constructed key equals it

Positions = dict[tuple[str | int, ...], Position]


def read_yaml(text: str, origin: str) -> tuple[Any, Positions]:
    """The document in ``text`` and the position of every path in it; ConfigError when it is not acceptable.

    ``origin`` names the file in messages. The data is what ``yaml.safe_load`` returns (aliases are
    shared objects); it is constructed only after the document passed every check.
    """
    loader = _BoundedLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except _TooDeep as exc:
            raise ConfigError(f"{origin}:{exc.line}: YAML nests deeper than {MAX_DEPTH} levels") from None
        if root is None:
            return None, {}
        _Measure(origin).visit(root, (), 1)
        positions = node_positions(root)  # before construction, which rewrites merge keys in place
        return loader.construct_document(root), positions
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_malformed(exc, origin)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: malformed YAML: {exc}") from None
    finally:
        loader.dispose()


def _malformed(exc: yaml.MarkedYAMLError, origin: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark else origin
    problem = exc.problem or "cannot parse"
    if exc.context:
        problem += f" ({exc.context})"
    if "\\t" in problem:
        problem += "; indent with spaces, YAML does not allow tabs"
    return f"{where}: malformed YAML: {problem}"


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` whose composer refuses to nest deeper than :data:`MAX_DEPTH` (instead of a RecursionError)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Measure:
    """One walk over the composed nodes: expanded size, recursive aliases and duplicate keys.

    Each node is measured once (memoised by identity); reaching it again is an alias, whose size is
    added without walking it again, so the walk is linear in the text however far aliases expand.
    """

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.sizes: dict[int, tuple[int, int, bool, int]] = {}  # id(node) -> (nodes, characters, aliased, depth)
        self.open: set[int] = set()  # nodes being walked: reaching one again is a recursive alias
        self.keys = SafeConstructor()

    def fail(self, line: int, path: tuple[str | int, ...], message: str) -> ConfigError:
        where = format_path(path)
        return ConfigError(f"{self.origin}:{line}: {where}: {message}" if where else f"{self.origin}:{line}: {message}")

    def visit(self, node: yaml.Node, path: tuple[str | int, ...], line: int) -> tuple[int, int, bool, int]:
        """(nodes, characters, whether aliases are involved, depth) of ``node`` with its aliases expanded."""
        known = self.sizes.get(id(node))
        if known is not None:
            return known[0], known[1], True, known[3]
        if id(node) in self.open:
            raise self.fail(line, path, "recursive YAML alias: it refers to a block that contains it")
        self.open.add(id(node))
        nodes, chars, aliased, depth = 1, 0, False, 1
        children: list[tuple[yaml.Node, tuple[str | int, ...], int]] = []
        if isinstance(node, yaml.ScalarNode):
            chars = len(node.value)
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, (*path, i), item.start_mark.line + 1) for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            self.check_keys(node, path)
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                merge = key_node.tag == MERGE_TAG
                child = path if merge or not isinstance(key_node, yaml.ScalarNode) else (*path, key_node.value)
                children += [(key_node, child, key_line), (value_node, child, key_line)]
        for child_node, child_path, child_line in children:
            n, c, a, d = self.visit(child_node, child_path, child_line)
            nodes, chars, aliased, depth = nodes + n, chars + c, aliased or a, max(depth, d + 1)
        self.open.discard(id(node))
        if aliased and nodes > MAX_EXPANDED_NODES:
            raise self.fail(line, path, f"YAML aliases expand to more than {MAX_EXPANDED_NODES} nodes")
        if aliased and chars > MAX_EXPANDED_CHARS:
            raise self.fail(line, path, f"YAML aliases expand to more than {MAX_EXPANDED_CHARS} characters of text")
        if depth > MAX_DEPTH:  # aliases nested in aliases: the text nests less than the data
            raise self.fail(line, path, f"YAML aliases nest deeper than {MAX_DEPTH} levels")
        self.sizes[id(node)] = (nodes, chars, aliased, depth)
        return nodes, chars, aliased, depth

    def check_keys(self, node: yaml.MappingNode, path: tuple[str | int, ...]) -> None:
        """Reject a key given twice in one mapping; keys merged in with ``<<`` may be overridden (YAML's rule)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a complex key: construction rejects it (a dict key must be hashable)
            line = key_node.start_mark.line + 1
            ident = self.key_of(key_node)
            first = seen.get(ident)
            if first is None:
                seen[ident] = line
                continue
            if key_node.tag == MERGE_TAG:
                raise self.fail(
                    line, path, f"duplicate key '<<' (first at line {first}); merge several blocks with <<: [*a, *b]"
                )
            raise self.fail(line, (*path, key_node.value), f"duplicate key '{key_node.value}' (first at line {first})")

    def key_of(self, key_node: yaml.ScalarNode) -> Any:
        """The key as the dict will hold it: ``on`` and ``true`` are the same key, ``1`` and ``"1"`` are not."""
        if key_node.tag == MERGE_TAG:
            return _MERGE
        try:
            value = self.keys.construct_object(key_node)
            hash(value)
        except Exception:  # noqa: BLE001 - a key that does not construct: construction reports it
            return (key_node.tag, key_node.value)
        return value
