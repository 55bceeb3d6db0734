"""Reading experiment files with bounded work: hostile input is normal input.

``read_yaml(path)`` returns the document and the line of every key path, or raises
:class:`YAMLProblem` with one line naming the problem. Before any parsing it refuses what is
not a regular file (a FIFO would block, ``/dev/zero`` never ends), files over
``MAX_FILE_BYTES`` and text that is not UTF-8. While composing it refuses nesting deeper than
``MAX_DEPTH`` (100k nested brackets otherwise exhaust the stack), documents that expand to
more than ``MAX_NODES`` nodes through aliases ("billion laughs": 600 bytes that expand
without bound), recursive aliases, duplicate keys (YAML keeps the last silently), keys that
are not strings, and integers too long to be a setting. Dates stay strings. The same loader
reads override values (``parse``).
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from pathlib import Path
from typing import Any, ClassVar

import yaml

MAX_FILE_BYTES = 1 << 20
"""An experiment file is a few hundred bytes; 1 MiB leaves room for long sweep lists."""
MAX_DEPTH = 32
"""Nesting levels of mappings and lists (an experiment file uses three or four)."""
MAX_NODES = 150_000
"""Nodes in the document once every alias is expanded: room for a sweep axis of 100,000
values (``--yes``'s grid limit) and the rest of the file."""
MAX_INT_DIGITS = 30
"""No setting needs an integer beyond 10³⁰ (a seed is below 2⁶³)."""


class YAMLProblem(ValueError):
    """Input refused; ``str(err)`` is one line: ``where: what``."""


class _Limit(yaml.MarkedYAMLError):
    """A limit of this loader, reported like a syntax error (with the line)."""


_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_NUMBERS = {  # YAML 1.1's but for octal 010 (8 there, 10 here) and base 60 (1:30 was 90)
    _INT: re.compile(r"^(?:[-+]?[0-9][0-9_]*|[-+]?0x[0-9a-fA-F_]+|[-+]?0o[0-7_]+|[-+]?0b[01_]+)$"),
    _FLOAT: re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
}
"""How numbers are read: as PyYAML's YAML 1.1 reads them (decimal digits with ``_`` between
them, ``0x`` hex, ``0b`` binary, floats with a point), but for its two silent surprises, which
YAML 1.2 dropped too: ``seq_len: 010`` is 10 (YAML 1.1: octal 8; ``0o10`` is octal 8) and
``seed: 1:30`` is the text "1:30" (YAML 1.1: 90, base 60), which the schema then refuses by
name."""


class _Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader with the limits above (one instance per document)."""

    yaml_implicit_resolvers: ClassVar = {  # dates stay strings: a date key is just a bad key
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_TIMESTAMP, _INT, _FLOAT)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._composing: set[str] = set()  # anchors whose node is not complete yet
        self._size: dict[str, int] = {}  # anchor → expanded size of its node

    def _count(self, n: int, mark) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            how = " once its aliases are expanded" if self._size else ""
            raise _Limit(None, None, f"the document has more than {MAX_NODES:,} values{how}", mark)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self._composing:
                raise _Limit(
                    None, None, f"alias *{event.anchor} refers to itself", event.start_mark
                )
            self._count(self._size.get(event.anchor, 1), event.start_mark)
            return super().compose_node(parent, index)
        event = self.peek_event()
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Limit(None, None, f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
        anchor = getattr(event, "anchor", None)
        before = self._nodes
        self._count(1, event.start_mark)
        if anchor is not None:
            self._composing.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._composing.discard(anchor)
                self._size[anchor] = self._nodes - before

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _Limit(
                        None,
                        None,
                        "merge keys (<<) are not supported: a merged key and a written one "
                        "would silently override each other; write the keys out",
                        key_node.start_mark,
                    )
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise _Limit(
                        None,
                        None,
                        f"key {key!r} is not a string (quote it)",
                        key_node.start_mark,
                    )
                if key in seen:
                    raise _Limit(
                        None,
                        None,
                        f"duplicate key {key!r} (first on line {seen[key]}); YAML would keep "
                        "only the last",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node).replace("_", "")
        digits = text[1:] if text[:1] in "+-" else text
        if len(digits) > MAX_INT_DIGITS:
            raise _Limit(
                None, None, f"integer of {len(digits)} digits is too large", node.start_mark
            )
        base = {"0x": 16, "0o": 8, "0b": 2}.get(digits[:2], 10)
        try:  # an explicit !!int tag may hold anything: ASCII digits of the base only
            if not (digits.isascii() and digits[2 if base != 10 else 0 :].isalnum()):
                raise ValueError
            return int(text[: len(text) - len(digits)] + digits[2 if base != 10 else 0 :], base)
        except ValueError:
            raise _Limit(None, None, f"{text!r} is not an integer", node.start_mark) from None


for _first in "+-0123456789.":  # YAML 1.2's numbers (_NUMBERS), after bool and null
    for _tag, _regexp in _NUMBERS.items():
        _Loader.yaml_implicit_resolvers.setdefault(_first, []).append((_tag, _regexp))
_Loader.add_constructor(_INT, _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


def parse(text: str, where: str = "<text>") -> tuple[Any, yaml.Node | None]:
    """The document in ``text`` and its node tree (for line numbers), within the limits."""
    loader = None
    try:
        loader = _Loader(text)  # checks the characters: a control character is refused here
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        return data, node
    except _Limit as e:
        raise YAMLProblem(f"{_mark(where, e)}: {e.problem}") from None
    except yaml.MarkedYAMLError as e:
        raise YAMLProblem(f"{_mark(where, e)}: YAML syntax error: {e.problem}") from None
    except yaml.YAMLError as e:
        raise YAMLProblem(f"{where}: YAML error: {str(e).splitlines()[0]}") from None
    except RecursionError:  # a limit above should have caught it first
        raise YAMLProblem(f"{where}: nesting too deep") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: str | Path) -> tuple[Any, yaml.Node | None]:
    """Read and parse an experiment file (see the module docstring)."""
    text = read_text(path)
    return parse(text, str(path))


def read_text(path: str | Path) -> str:
    """A regular UTF-8 file of at most MAX_FILE_BYTES, read without blocking."""
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise YAMLProblem(f"{path}: cannot read experiment file ({e.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise YAMLProblem(f"{path}: not a regular file ({_kind(info.st_mode)})")
        if info.st_size > MAX_FILE_BYTES:
            raise YAMLProblem(
                f"{path}: {info.st_size:,} bytes is too large for an experiment file "
                f"(limit {MAX_FILE_BYTES:,})"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise YAMLProblem(f"{path}: cannot read experiment file ({e.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise YAMLProblem(f"{path}: too large for an experiment file (limit {MAX_FILE_BYTES:,})")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE)):
        raise YAMLProblem(f"{path}: the file is UTF-16 or UTF-32; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise YAMLProblem(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8"
        ) from None


def _mark(where: str, e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    return f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"
