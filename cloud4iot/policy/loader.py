"""Load a PlacementPolicy from YAML and report every problem with file, line and field.

PyYAML's composed node tree keeps the position of every key and value; we walk it
once to map each path (spec.classes.x.tiers.1) to a line, then translate
pydantic's error locations through that map. All problems are reported at once.

A policy is read by the service at start and on every reload, and by `check-policy`,
so the YAML is bounded before anything is built from it: aliases may repeat an anchored
node, but the document they expand to may hold at most MAX_NODES nodes and nest at
most MAX_DEPTH deep (a 1 KB "billion laughs" file expands to 10^9 nodes), and the
file at most MAX_BYTES. The counting happens while composing, so a bomb is refused
at its first alias over the budget, in microseconds, with its line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cloud4iot.policy.schema import PlacementPolicy, semantic_problems

PathKey = tuple[str | int, ...]

MAX_BYTES = 1024 * 1024  # the shipped policy is 4 KB
MAX_NODES = 20_000  # every node, aliases counted as the nodes they repeat (default: ~300)
MAX_DEPTH = 50  # nesting; the schema's deepest path is 5


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int  # 1-based
    field: str  # dotted path, "" for the whole document
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class PolicyError(ValueError):
    """A policy that cannot be used; `problems` lists each one."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    policy: PlacementPolicy
    source: str
    digest: str  # sha256 of the bytes, so reloads of identical content are no-ops

    @property
    def version(self) -> str:
        return f"{self.policy.metadata.name}@{self.digest[:12]}"


class _TooLargeError(Exception):
    def __init__(self, line: int, path: PathKey, message: str) -> None:
        super().__init__(message)
        self.line, self.path, self.message = line, path, message


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts the nodes of the document as its aliases expand it, and
    stops at the first alias (or node) past the budget, before building anything.

    A cycle (an alias inside the node it names) is refused too: nothing in a policy
    is recursive, and walking one would never end.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._expanded = 0
        self._sizes: dict[int, int] = {}  # id(anchored node) -> nodes it stands for
        self._path: list[str | int] = []  # for the problem's field
        self._depth = 0  # keys included: `? - ? - ...` nests without a path

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        part: str | int | None = None
        if isinstance(index, yaml.ScalarNode):
            part = str(index.value)  # composing a mapping value: its key
        elif isinstance(index, int):
            part = index  # composing a sequence item
        path = (*self._path, part) if part is not None else tuple(self._path)
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # else the composer reports the undefined alias
                size = self._sizes.get(id(target))
                if size is None:
                    raise _TooLargeError(
                        line,
                        path,
                        f"alias *{event.anchor} is inside the node it names "
                        "(a recursive structure): not allowed in a policy",
                    )
                self._count(size, line, path, f"alias *{event.anchor}")
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _TooLargeError(line, path, f"nested more than {MAX_DEPTH} levels deep")
        self._count(1, line, path, "")
        before = self._expanded
        self._depth += 1
        if part is not None:
            self._path.append(part)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if part is not None:
                self._path.pop()
        if event.anchor is not None and node is not None:
            self._sizes[id(node)] = self._expanded - before + 1
        return node

    def _count(self, nodes: int, line: int, path: PathKey, alias: str) -> None:
        self._expanded += nodes
        if self._expanded <= MAX_NODES:
            return
        if alias:
            message = (
                f"aliases expand the policy past {MAX_NODES} nodes ({alias} here repeats "
                f"{nodes}): an alias bomb? refused"
            )
        else:
            message = f"the policy has more than {MAX_NODES} nodes: refused"
        raise _TooLargeError(line, path, message)


def _dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _index(
    node: yaml.Node, path: PathKey, lines: dict[PathKey, int], dupes: list[tuple[PathKey, int]]
) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                dupes.append(((*path, key), key_node.start_mark.line + 1))
            seen.add(key)
            _index(value_node, (*path, key), lines, dupes)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines, dupes)


def _unbuildable(node: yaml.Node, path: PathKey) -> tuple[int, PathKey]:
    """The first scalar PyYAML cannot construct (a bad explicit tag), and its path."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            found = _unbuildable(value_node, (*path, str(key_node.value)))
            if found[1] != ():
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _unbuildable(item, (*path, i))
            if found[1] != ():
                return found
    elif isinstance(node, yaml.ScalarNode):
        try:
            yaml.SafeLoader("").construct_object(node, deep=True)
        except Exception:
            return node.start_mark.line + 1, path
    return 1, ()


def _line_for(path: PathKey, lines: dict[PathKey, int]) -> int:
    # A missing field has no line of its own: point at the nearest parent that exists.
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return 1


def parse_policy(text: str | bytes, source: str = "<policy>") -> LoadedPolicy:
    """Parse and validate; raises PolicyError listing every problem found."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_BYTES:
        message = f"the file has {len(raw)} bytes, more than the {MAX_BYTES} a policy may have"
        raise PolicyError([Problem(source, 1, "", message)])
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([Problem(source, 1, "", f"not UTF-8 text: {exc.reason}")]) from exc
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(decoded)
        root = loader.get_single_node()
    except _TooLargeError as exc:
        raise PolicyError([Problem(source, exc.line, _dotted(exc.path), exc.message)]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise PolicyError([Problem(source, line, "", f"invalid YAML: {exc.problem}")]) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, C0)
        line = decoded.count("\n", 0, exc.position) + 1
        what = f"character #x{exc.character:04x}" if isinstance(exc.character, int) else "byte"
        message = f"invalid YAML: {what} is not allowed ({exc.reason})"
        raise PolicyError([Problem(source, line, "", message)]) from exc
    finally:
        if loader is not None:
            loader.dispose()
    if root is None:
        raise PolicyError([Problem(source, 1, "", "the file is empty")])

    lines: dict[PathKey, int] = {}
    dupes: list[tuple[PathKey, int]] = []
    _index(root, (), lines, dupes)
    problems = [Problem(source, line, _dotted(p), "key appears twice") for p, line in dupes]
    try:
        # Built from the bounded node tree, not parsed again.
        data: Any = yaml.SafeLoader("").construct_document(root)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as exc:
        # It composes, but cannot be built: a bad explicit tag, an unhashable key.
        line, where = _unbuildable(root, ())
        mark = getattr(exc, "problem_mark", None)
        if not where and mark is not None:
            line = mark.line + 1
        reason = getattr(exc, "problem", None) or exc
        problems.append(Problem(source, line, _dotted(where), f"invalid YAML value: {reason}"))
        raise PolicyError(problems) from exc
    if not isinstance(data, dict):
        problems.append(Problem(source, 1, "", "the document must be a mapping"))
        raise PolicyError(problems)

    try:
        policy = PlacementPolicy.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc: PathKey = tuple(err["loc"])
            # pydantic appends validator names for unions/annotated types; keep data keys
            problems.append(
                Problem(source, _line_for(loc, lines), _dotted(loc), _message(err, data))
            )
        raise PolicyError(problems) from exc

    problems += [
        Problem(source, _line_for(p, lines), _dotted(p), msg)
        for p, msg in semantic_problems(policy)
    ]
    if problems:
        raise PolicyError(problems)
    return LoadedPolicy(policy=policy, source=source, digest=hashlib.sha256(raw).hexdigest())


def _message(err: Any, data: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see policies/README.md)"
    if kind == "literal_error":
        return f"{err['msg']} (got {err.get('input')!r})"
    return str(err["msg"]).removeprefix("Value error, ")


def load_policy(path: str | Path) -> LoadedPolicy:
    """Read and parse a policy file (blocking: call from a thread on the event loop)."""
    p = Path(path)
    try:
        raw = read_bounded(p)
    except OSError as exc:
        raise PolicyError([Problem(str(p), 1, "", f"cannot read: {exc.strerror}")]) from exc
    return parse_policy(raw, source=str(p))


def read_bounded(path: Path) -> bytes:
    """The file's bytes, but never more than MAX_BYTES + 1 (enough to refuse it)."""
    with path.open("rb") as f:
        return f.read(MAX_BYTES + 1)
