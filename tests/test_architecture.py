"""The floors of the house (docs/architecture.md), checked from the source: every import of every module under
src/audiorouter (module-level, function-level and `if TYPE_CHECKING:` ones alike, read with ast, nothing
imported) must go to the same floor or a lower one, and no module may take another module's private names.

    cli.py, cli_keys.py   entry points: build the app and the services, run a job
    api/, web/            HTTP: dialects, parsing, rendering, the Playground pages
    jobs/                 use cases: transcription, speech, chat, batch
    routing/              catalog, plan, attempts, pricing
    providers/            one adapter per upstream, its wire protocol, the local engines
    audio/                sniff, decode, chunk, encode
    store/                database, keys, ledger, caches
    core/, config.py      neutral types, errors, languages, text; settings

A third-party private name is allowed only where tests/test_third_party_privates.py pins the version it was
read from (THIRD_PARTY_PRIVATE below lists them)."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PKG = "audiorouter"

FLOORS = {  # first component under audiorouter -> floor (higher imports lower, never the other way)
    "cli": 8,  # and every cli_*.py
    "api": 7, "web": 7,
    "jobs": 6,
    "routing": 5,
    "providers": 4,
    "audio": 3,
    "store": 2,
    "core": 1, "config": 1, "__init__": 1,
}

# Reaches into third-party private names, each pinned by a test in tests/test_third_party_privates.py or
# tests/test_languages.py: (module of ours, the private name)
THIRD_PARTY_PRIVATE = {
    ("audiorouter.providers.local_whisper", "_split_segments_by_timestamps"),  # faster-whisper 1.2.1
    ("audiorouter.api.protocol", "_should_upgrade_to_ws"),                     # uvicorn 0.54.0 (overridden)
    ("audiorouter.api.protocol", "_unsupported_upgrade_warning"),              # uvicorn 0.54.0 (overridden)
}

@dataclass(frozen=True)
class Import:
    module: str   # the importing module, dotted
    target: str   # the imported module, dotted
    names: tuple[str, ...]
    line: int


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PKG).rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = modules()


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):  # every import, wherever it is: module level, functions, TYPE_CHECKING blocks
        if isinstance(node, ast.Import):
            out.extend(Import(module, a.name, (), node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, is_package, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in MODULES:  # `from . import jobs`: the submodule itself
                    out.append(Import(module, sub, (), node.lineno))
                else:
                    out.append(Import(module, target, (a.name,), node.lineno))
    return out


ALL_IMPORTS = [i for m in MODULES for i in imports_of(m)]


def floor_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    room = parts[1] if len(parts) > 1 else "__init__"
    if room.startswith("cli"):  # cli.py, cli_keys.py, cli_jobs.py: entry points
        room = "cli"
    if room not in FLOORS:
        raise AssertionError(f"{module}: {room!r} has no floor in tests/test_architecture.py FLOORS "
                             "(and docs/architecture.md)")
    return room, FLOORS[room]


def upward() -> list[tuple[str, str, int]]:
    bad = []
    for i in ALL_IMPORTS:
        if not (i.target == PKG or i.target.startswith(PKG + ".")):
            continue
        (_, mine), (_, theirs) = floor_of(i.module), floor_of(i.target)
        if theirs > mine:
            bad.append((i.module, i.target, i.line))
    return bad


def private_reaches() -> list[str]:
    """`from x import _name` / `import x._mod` across modules of ours, and `alias._name` on a module we import."""
    bad = []
    for i in ALL_IMPORTS:
        ours = i.target == PKG or i.target.startswith(PKG + ".")
        for n in i.names:
            if n.startswith("_") and not n.startswith("__"):
                if ours and i.target != i.module:
                    bad.append(f"{i.module}:{i.line} imports {i.target}.{n}")
                elif not ours and (i.module, n) not in THIRD_PARTY_PRIVATE:
                    bad.append(f"{i.module}:{i.line} imports the third-party private {i.target}.{n} "
                               "(pin it in tests/test_third_party_privates.py and list it here)")
        last = i.target.rsplit(".", 1)[-1]
        if ours and last.startswith("_") and not last.startswith("__") and i.target.rsplit(".", 1)[0] != \
                i.module.rsplit(".", 1)[0]:
            bad.append(f"{i.module}:{i.line} imports the private module {i.target}")
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases = {}  # local name -> our module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = resolve(module, path.name == "__init__.py", node)
                for a in node.names:
                    if f"{target}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{target}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and aliases[node.value.id] != module):
                bad.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return bad


def test_every_module_has_a_floor():
    for m in MODULES:
        floor_of(m)


def test_no_import_goes_up_a_floor():
    bad = [f"{m}:{line} imports {t} ({floor_of(t)[0]} is above {floor_of(m)[0]})" for m, t, line in upward()]
    assert not bad, "upward imports:\n  " + "\n  ".join(bad)


def test_no_module_takes_another_modules_private_names():
    bad = private_reaches()
    assert not bad, "private reaches:\n  " + "\n  ".join(bad)


def test_third_party_private_uses_are_the_pinned_ones():
    """Every `noqa: SLF001` (ruff's private-member check) in src names a reach THIRD_PARTY_PRIVATE lists."""
    found = set()
    for module, path in MODULES.items():
        for line in path.read_text().splitlines():
            if "noqa: SLF001" in line:
                for name in re.findall(r"\.(_[A-Za-z]\w*)", line):
                    found.add((module, name))
    overridden = {(m, n) for m, n in THIRD_PARTY_PRIVATE if "protocol" in m}  # overrides carry no noqa
    assert found == THIRD_PARTY_PRIVATE - overridden


def test_the_checker_sees_what_it_should(tmp_path):
    """The resolver itself: relative imports, function-level and TYPE_CHECKING imports are all read."""
    src = ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
           "    from ..api.app import create_app\ndef f():\n    from ..jobs import speech\n    return speech\n")
    tree = ast.parse(src)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.append(resolve("audiorouter.core.x", False, node))
    assert found == ["__future__", "typing", "audiorouter.api.app", "audiorouter.jobs"]
    assert floor_of("audiorouter.api.app")[1] > floor_of("audiorouter.core.x")[1]


def test_the_docs_show_every_floor():
    """docs/architecture.md's table names every floor this test enforces."""
    doc = (SRC.parent / "docs" / "architecture.md").read_text()
    for room in FLOORS:
        if room == "__init__":
            continue
        name = {"cli": "`cli*.py`", "config": "`config.py`"}.get(room, f"`{room}/`")
        assert name in doc, f"docs/architecture.md does not show the {room} floor"
