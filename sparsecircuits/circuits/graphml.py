"""GraphML text for a networkx graph, built as plain strings (networkx's ElementTree writer
takes seconds on a weight graph).

One ``<key>`` per attribute name and scope (graph, node, edge) that some value uses, typed from
the Python values: bool -> ``boolean``, int -> ``long``, float -> ``double``, str -> ``string``;
a name with both int and float values is ``double``. None values are left out, as networkx
does. Floats are written with ``repr``, so they read back exactly; the text is pure ASCII
(anything else becomes a character reference). ``networkx.read_graphml`` reads it back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import networkx as nx

HEADER = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    '<graphml xmlns="http://graphml.graphdrawing.org/xmlns"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns'
    ' http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">'
)
_XML_TYPES: dict[type, str] = {bool: "boolean", int: "long", float: "double", str: "string"}
_FLOAT_WORDS = {"inf": "INF", "-inf": "-INF", "nan": "NaN"}  # xs:double spellings
# Characters XML 1.0 cannot hold, not even as a character reference (lone surrogates too).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Text content keeps a carriage return only as a reference (parsers turn a raw one into \n).
_CR = {"\r": "&#13;"}


def graphml_text(graph: nx.Graph) -> str:
    """The GraphML document of ``graph`` (directed or not), see module doc; a multigraph's
    edge keys become edge ids (``networkx.read_graphml(..., force_multigraph=True)`` reads
    them back as keys). Raises TypeError naming the attribute whose values GraphML cannot
    store (anything but bool, int, float, str and None) or that mixes kinds (str or bool with
    anything else)."""
    strings: dict[str, str] = {}  # escaped text of every string value seen, for reuse

    def text(value: str, what: str) -> str:
        out = strings.get(value)
        if out is None:
            _check_xml(value, what)
            out = strings[value] = _ascii(escape(value, _CR))
        return out

    def writer(kind: type, name: str) -> Callable[[Any], str]:
        if kind is bool:
            return lambda v: "true" if v else "false"
        if kind is int:
            return int.__repr__
        if kind is float:
            return _double
        return lambda v: text(v, f"attribute {name!r}")

    keys: list[str] = []
    scopes: dict[str, dict[str, tuple[str, Callable[[Any], str]]]] = {}
    for scope, rows in (("graph", [graph.graph]), ("node", (d for _, d in graph.nodes(data=True))),
                        ("edge", (e[-1] for e in graph.edges(data=True)))):
        scopes[scope] = {}
        for name, kind in _attribute_kinds(scope, rows).items():
            key = f"d{len(keys)}"
            keys.append(f'  <key id="{key}" for="{scope}" attr.name={_attr(name, "a key")}'
                        f' attr.type="{_XML_TYPES[kind]}"/>')
            scopes[scope][name] = (key, writer(kind, name))

    def data(attrs: Mapping[Any, Any], scope: str, indent: str) -> list[str]:
        known = scopes[scope]
        return [f'{indent}<data key="{known[k][0]}">{known[k][1](v)}</data>'
                for k, v in attrs.items() if v is not None]

    lines = [HEADER, *keys]
    direction = "directed" if graph.is_directed() else "undirected"
    lines.append(f'  <graph edgedefault="{direction}">')
    lines += data(graph.graph, "graph", "    ")
    ids: dict[Any, str] = {}
    for node, attrs in graph.nodes(data=True):
        ids[node] = node_id = _attr(str(node), "a node id")
        rows = data(attrs, "node", "      ")
        if rows:
            lines += [f"    <node id={node_id}>", *rows, "    </node>"]
        else:
            lines.append(f"    <node id={node_id}/>")
    edges = (graph.edges(keys=True, data=True) if graph.is_multigraph()
             else ((u, v, None, d) for u, v, d in graph.edges(data=True)))
    for u, v, key, attrs in edges:
        head = f"    <edge source={ids[u]} target={ids[v]}"
        if key is not None:
            head += f" id={_attr(str(key), 'an edge key')}"
        rows = data(attrs, "edge", "      ")
        lines += [f"{head}>", *rows, "    </edge>"] if rows else [f"{head}/>"]
    lines += ["  </graph>", "</graphml>", ""]
    return "\n".join(lines)


def _attribute_kinds(scope: str, rows: Iterable[Mapping[Any, Any]]) -> dict[str, type]:
    """Each attribute name of ``rows`` (None values aside) with the one type it is written as,
    in order of first appearance."""
    seen: dict[Any, set[type]] = {}
    for attrs in rows:
        for name, value in attrs.items():
            if value is not None:
                types = seen.get(name)
                if types is None:
                    types = seen[name] = set()
                types.add(type(value))
    out: dict[str, type] = {}
    for name, types in seen.items():
        if not isinstance(name, str):
            raise TypeError(f"GraphML: {scope} attribute name {name!r} is not a string")
        kinds = set()
        for t in types:
            kind = next((k for k in _XML_TYPES if issubclass(t, k)), None)
            if kind is None:
                raise TypeError(f"GraphML: {scope} attribute {name!r} has a value of type "
                                f"{t.__name__}; only bool, int, float, str and None can be "
                                f"written")
            kinds.add(kind)
        if kinds == {int, float}:
            kinds = {float}
        if len(kinds) > 1:
            found = ", ".join(sorted(k.__name__ for k in kinds))
            raise TypeError(f"GraphML: {scope} attribute {name!r} mixes values of types "
                            f"{found}; only int and float may share an attribute")
        out[name] = kinds.pop()
    return out


def _double(value: float) -> str:
    """``repr`` of the float (exact on reading back), in xs:double's spelling of inf and nan."""
    out = float.__repr__(float(value))
    return _FLOAT_WORDS.get(out, out)


def _ascii(text: str) -> str:
    return text if text.isascii() else text.encode("ascii", "xmlcharrefreplace").decode("ascii")


def _attr(value: str, what: str) -> str:
    """``value`` as a quoted XML attribute value."""
    _check_xml(value, what)
    return _ascii(quoteattr(value))


def _check_xml(value: str, what: str) -> None:
    bad = _NOT_XML.search(value)
    if bad:
        raise ValueError(f"GraphML: {what} holds {bad.group()!r}, which XML cannot hold: "
                         f"{value!r}")
