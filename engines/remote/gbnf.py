"""Programs for llama-cpp-python's server, which takes GBNF only.

The program's grammar arrives as the Lark text ``engines.grammar.lower`` wrote:
``start: ...`` plus one rule per gen / select / regex / json, each
``name[attrs]: body``.  This module reads that subset back and writes what the
server can enforce:

* literal text, and ``select`` of literal options: a GBNF alternation;
* ``json()``: llama-cpp-python's own JSON-schema-to-GBNF conversion (what its
  ``response_format`` does) with compact separators, so the local matcher checks
  the same language (its schema gets the same separators);
* a free ``gen()`` at the very end: no grammar for it, its ``stop`` and
  ``max_tokens`` become request parameters.

Anything else (a regex, a gen inside a grammar, nested selects of grammars) is
an :class:`UnsupportedGrammar` naming the construct, raised before any request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .errors import UnsupportedGrammar

_ANY = "(?s:.*)"
WHY = "llama-cpp-python's server takes GBNF only"
#: The separators the JSON grammar sent to llama-cpp-python's server allows (GBNF without spaces).
COMPACT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


@dataclass
class Rule:
    name: str
    attrs: dict
    body: list  # alternatives, each a list of items: ("lit", str) | ("ref", name) | ("re", pattern) | ("json", text)


@dataclass
class Plan:
    """What to send to llama-cpp-python's server, and the grammar the local matcher follows."""

    gbnf: str | None  # None: no grammar (free text)
    stop: list[str] = field(default_factory=list)
    max_tokens: int | None = None  # the trailing gen's budget, counted from its start
    prefix: str = ""  # forced text before the trailing gen (its tokens count against max_tokens too)
    matcher_lark: str = ""


# -- reading our Lark back -------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<re>/(?:[^/\\]|\\.)*/)|(?P<bar>\|)|(?P<id>[A-Za-z_][A-Za-z0-9_]*))')


def parse_lark(lark: str) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for line in lark.splitlines():
        if not line.strip():
            continue
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(\[(.*?)\])?:\s?(.*)$", line)
        if not m:
            raise UnsupportedGrammar(f"{WHY}: cannot read the grammar line {line[:60]!r}")
        name, _, attrs, body = m.groups()
        rules[name] = Rule(name, _attrs(attrs or ""), _body(body))
    if "start" not in rules:
        raise UnsupportedGrammar(f"{WHY}: the grammar has no start rule")
    return rules


def _attrs(text: str) -> dict:
    out = {}
    for m in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|/(?:[^/\\]|\\.)*/|[^,\s]+)', text):
        k, v = m.groups()
        if v.startswith('"'):
            out[k] = json.loads(v)
        elif v.startswith("/"):
            out[k] = ("re", v[1:-1])
        else:
            out[k] = v
    return out


def _body(text: str) -> list:
    if text.startswith("%json "):
        return [[("json", text[len("%json "):])]]
    alts, cur, pos = [], [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip():
                raise UnsupportedGrammar(f"{WHY}: cannot read the grammar text {text[pos:pos + 40]!r}")
            break
        pos = m.end()
        if m.group("str"):
            cur.append(("lit", json.loads(m.group("str"))))
        elif m.group("re"):
            cur.append(("re", m.group("re")[1:-1]))
        elif m.group("bar"):
            alts.append(cur)
            cur = []
        else:
            cur.append(("ref", m.group("id")))
    alts.append(cur)
    return alts


def _what(rule: Rule) -> str:
    kind = rule.name.rsplit("_", 1)[0]
    cap = rule.attrs.get("capture")
    return f"{kind}({cap!r})" if cap else f"{kind}()"


# -- writing GBNF ----------------------------------------------------------------------------
def _gbnf_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def plan(lark: str) -> Plan:
    """The request for a program's grammar, or :class:`UnsupportedGrammar` naming what cannot be sent."""
    rules = parse_lark(lark)
    start = rules["start"]
    if len(start.body) != 1:
        raise UnsupportedGrammar(f"{WHY}: an alternation at the top of the grammar")
    items = start.body[0]
    trailing: Rule | None = None
    if items and items[-1][0] == "ref" and rules.get(items[-1][1]) and rules[items[-1][1]].name.startswith("gen_"):
        trailing = rules[items[-1][1]]
        items = items[:-1]
    json_rules: list[str] = []
    matcher_rules = dict(rules)

    def expr(item, depth: int) -> str:
        kind, value = item
        if kind == "lit":
            return _gbnf_string(value) if value else '""'
        if kind == "re":
            raise UnsupportedGrammar(f"{WHY}: it cannot enforce the regex /{value}/ (use a server that runs llguidance)")
        rule = rules.get(value)
        if rule is None:
            raise UnsupportedGrammar(f"{WHY}: the grammar names an unknown rule {value!r}")
        head = rule.name.rsplit("_", 1)[0]
        if head == "gen":
            if rule.body == [[("re", _ANY)]]:
                raise UnsupportedGrammar(f"{WHY}: it cannot enforce {_what(rule)} inside a grammar "
                                         "(only a free gen at the very end; use a server that runs llguidance)")
            raise UnsupportedGrammar(f"{WHY}: it cannot enforce {_what(rule)} with a regex "
                                     "(use a server that runs llguidance)")
        if head == "regex":
            raise UnsupportedGrammar(f"{WHY}: it cannot enforce {_what(rule)} (a regex; use a server that runs llguidance)")
        if head == "json":
            return json_rule(rule)
        if head == "select":
            alts = []
            for alt in rule.body:
                if any(k != "lit" for k, _ in alt):
                    inner = next((rules.get(v) for k, v in alt if k == "ref"), None)
                    what = _what(inner) if inner is not None else "a regex"
                    raise UnsupportedGrammar(f"{WHY}: it cannot enforce {_what(rule)} with an option that "
                                             f"holds {what} (a nested grammar; only literal options)")
                alts.append(" ".join(expr(i, depth + 1) for i in alt) or '""')
            return "(" + " | ".join(alts) + ")"
        raise UnsupportedGrammar(f"{WHY}: it cannot enforce the rule {rule.name!r}")

    def json_rule(rule: Rule) -> str:
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        if json_rules:
            raise UnsupportedGrammar(f"{WHY}: only one json() per grammar")
        text = rule.body[0][0][1]
        schema = json.loads(text)
        schema["x-guidance"] = dict(COMPACT)
        matcher_rules[rule.name] = Rule(rule.name, rule.attrs, [[("json", json.dumps(schema))]])
        plain = {k: v for k, v in schema.items() if k != "x-guidance"}
        try:
            g = json_schema_to_gbnf(json.dumps(plain))
        except Exception as e:  # noqa: BLE001 - a schema the converter cannot handle
            raise UnsupportedGrammar(f"{WHY}: its JSON-schema conversion failed for {_what(rule)}: {e}") from None
        lines = []
        for line in g.splitlines():
            if line.startswith("space ::="):
                line = 'space ::= ""'  # compact: the separators the matcher's schema has too
            elif line.startswith("char ::="):
                line = line.replace('[^"\\\\]', '[^"\\\\\\x7F\\x00-\\x1F]', 1)  # JSON strings have no control chars
            elif line.startswith("root ::="):
                line = "gtui-json ::=" + line[len("root ::="):]
            if re.search(r"(?<![\w-])root(?![\w-])", line.split("::=", 1)[-1].replace('"root"', "")):
                raise UnsupportedGrammar(f"{WHY}: a recursive JSON schema in {_what(rule)}")
            lines.append(line)
        json_rules.extend(lines)
        return "gtui-json"

    seq = [expr(i, 0) for i in items]
    out = Plan(None)
    if trailing is not None:
        if trailing.body != [[("re", _ANY)]]:
            raise UnsupportedGrammar(f"{WHY}: it cannot enforce {_what(trailing)} with a regex "
                                     "(use a server that runs llguidance)")
        stop = trailing.attrs.get("stop")
        if isinstance(stop, tuple):  # stop=/a|b/: our lowering of several stop strings
            out.stop = [_unescape(s) for s in stop[1].split("|")]
        elif stop:
            out.stop = [stop]
        if "max_tokens" in trailing.attrs:
            out.max_tokens = int(trailing.attrs["max_tokens"])
        if "temperature" in trailing.attrs:
            pass  # the engine sends the call's temperature
        out.prefix = "".join(v for k, v in items if k == "lit")
        if seq:
            seq.append("gtui-any")
    if seq and any(s != '""' for s in seq):
        root = "root ::= " + " ".join(seq)
        extra = ['gtui-any ::= [^\\x00]*'] if trailing is not None else []
        out.gbnf = "\n".join([root, *json_rules, *extra]) + "\n"
    out.matcher_lark = _write_lark(matcher_rules)
    return out


def _unescape(pattern: str) -> str:
    return re.sub(r"\\(.)", r"\1", pattern)


def _write_lark(rules: dict[str, Rule]) -> str:
    lines = []
    for rule in rules.values():
        head = rule.name
        if rule.attrs:
            parts = []
            for k, v in rule.attrs.items():
                if isinstance(v, tuple):
                    parts.append(f"{k}=/{v[1]}/")
                elif isinstance(v, str) and k in ("capture", "stop", "suffix"):
                    parts.append(f"{k}={json.dumps(v, ensure_ascii=False)}")
                else:
                    parts.append(f"{k}={v}")
            head += "[" + ", ".join(parts) + "]"
        alts = []
        for alt in rule.body:
            words = []
            for k, v in alt:
                if k == "lit":
                    words.append(json.dumps(v, ensure_ascii=False))
                elif k == "re":
                    words.append(f"/{v}/")
                elif k == "json":
                    words.append(f"%json {v}")
                else:
                    words.append(v)
            alts.append(" ".join(words))
        lines.append(f"{head}: " + " | ".join(alts))
    return "\n".join(lines) + "\n"
