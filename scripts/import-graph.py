#!/usr/bin/env python3
"""Prints the module import graph of the workspace and its circles (strongly connected
components with more than one module), read from `crate::`, `super::` and workspace-crate paths
in the source. Nodes are modules, one a file (`vessel::store::outbox`, `wire::envelope`);
a module using its own parent or child does not count (a parent declares its children, a child
uses its parent's shared types), any other pair that reaches each other is a circle. Exit 1 if there is a circle, or if a crate imports
one it may not (see ALLOWED). Run: scripts/import-graph.py [--edges]"""
import pathlib, re, sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = {"base": "crates/base/src", "wire": "crates/wire/src", "moodle": "crates/moodle/src",
          "vessel": "crates/vessel/src", "shore": "crates/shore/src",
          "testkit": "crates/testkit/src", "vessel_sync": "src"}
# What each crate may import (ARCHITECTURE.md, "Layers").
ALLOWED = {"base": set(), "wire": {"base"}, "moodle": {"base", "wire"},
           "vessel": {"base", "wire", "moodle"}, "shore": {"base", "wire", "moodle"},
           "testkit": {"base", "wire", "moodle"},
           "vessel_sync": {"base", "wire", "moodle", "vessel", "shore", "testkit"}}
PATH = re.compile(r"\b(crate|super|base|wire|moodle|vessel|shore|testkit)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")

def module_of(crate, rel):
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts in ([], ["lib"], ["main"]):
        return crate, []
    return crate, parts

MODULES = set()
for _c, _d in CRATES.items():
    for _f in (ROOT / _d).rglob("*.rs"):
        _, _m = module_of(_c, _f.relative_to(ROOT / _d))
        MODULES.add("::".join([_c] + _m))

def node(crate, parts):
    """The deepest module named by crate::parts..."""
    best = crate
    for i in range(1, len(parts) + 1):
        cand = "::".join([crate] + parts[:i])
        if cand in MODULES:
            best = cand
        else:
            break
    return best

def related(a, b):
    return a.startswith(b + "::") or b.startswith(a + "::")

edges, bad = {}, []
for crate, d in CRATES.items():
    for f in sorted((ROOT / d).rglob("*.rs")):
        rel = f.relative_to(ROOT / d)
        _, mod = module_of(crate, rel)
        me = node(crate, mod)
        text = re.sub(r"//[^\n]*", "", f.read_text())
        for m in PATH.finditer(text):
            head, rest = m.group(1), [p for p in m.group(2).split("::") if p]
            if head == "crate":
                target = node(crate, rest)
            elif head == "super":
                target = node(crate, mod[:-1] + rest)
            else:
                if head == crate:
                    continue
                if head not in ALLOWED[crate] and head != "vessel_sync":
                    bad.append(f"{rel}: {crate} imports {head}")
                target = node(head, rest)
            if target != me and not related(target, me):
                edges.setdefault(me, set()).add(target)

# Tarjan's strongly connected components.
index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in list(edges):
    if v not in index: visit(v)

if "--edges" in sys.argv:
    for v in sorted(edges):
        print(f"{v} -> {', '.join(sorted(edges[v]))}")
for c in sccs:
    print("circle:", " <-> ".join(c))
for b in sorted(set(bad)):
    print("not allowed:", b)
print(f"{len(edges)} modules with imports, {sum(len(e) for e in edges.values())} edges, {len(sccs)} circles, {len(set(bad))} layer violations")
sys.exit(1 if sccs or bad else 0)
