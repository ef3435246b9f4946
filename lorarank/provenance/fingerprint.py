"""Code fingerprints: what each command executes, so Snakemake reruns exactly what a change affects.

Rules call `python -m lorarank <command>` through `shell:`, so Snakemake's own `code` trigger sees
only the shell string. Instead every rule carries, as a param, the fingerprint of its command:

* the import closure of the command's module inside the `lorarank` package, found statically
  (every `import`/`from ... import` anywhere in a module, function-level ones included);
* each closure module's code as Python sees it: the AST with docstrings removed. Comments,
  blank lines, formatting and docstrings do not count as changes; any change to the code does.
  File content decides, never modification times: `touch` or a fresh clone changes nothing;
* the installed version of every third-party package the closure imports (torch, transformers,
  peft, trl, ...), as this Python sees them: an upgraded TRL changes `train`, not `prepare-data`.
  When rules run in containers, the image digest stands for these versions.

Standard library only, so the workflow can import it without the training stack:

    python -m lorarank fingerprint            # every command's fingerprint
    python -m lorarank fingerprint train -v   # what goes into one: modules and package versions
"""

from __future__ import annotations

import ast
import hashlib
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "lorarank"


def _imports(tree: ast.AST, module: str) -> set[str]:
    """Dotted names imported anywhere in a module (relative imports resolved)."""
    found = set()
    pkg = module.rsplit(".", 1)[0] if "." in module else module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return found


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


# Parsing is the whole cost (every Snakemake start fingerprints all commands, whose closures share most modules):
# each module's source is parsed, walked and dumped once per process, cached by its text, so an edited file is
# read again and never served stale.
@lru_cache(maxsize=None)
def _parsed(source: str) -> ast.AST:
    return ast.parse(source)


def _parse(path: Path) -> ast.AST:
    return _parsed(path.read_text())


@lru_cache(maxsize=None)
def _module_imports(source: str, module: str) -> frozenset[str]:
    return frozenset(_imports(_parsed(source), module))


@lru_cache(maxsize=None)
def _normalized(source: str) -> str:
    return ast.dump(_strip_docstrings(ast.parse(source)))  # its own tree: stripping changes it


def normalized(path: Path) -> str:
    """The code of a module as it counts for reruns (AST, no docstrings, no comments, no layout)."""
    return _normalized(path.read_text())


def _module_file(root: Path, name: str) -> Path | None:
    parts = name.split(".")
    f = root.joinpath(*parts).with_suffix(".py")
    if f.is_file():
        return f
    init = root.joinpath(*parts, "__init__.py")
    return init if init.is_file() else None


def closure(root: Path, start: str) -> tuple[list[str], list[str]]:
    """(lorarank modules, third-party top-level packages) reachable from module `start`."""
    root = Path(root)
    # every command enters through `python -m lorarank` (the package, __main__ and the cli dispatch)
    seen, external, todo = set(), set(), [start, PACKAGE, f"{PACKAGE}.__main__", f"{PACKAGE}.cli"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(root, name)
        if path is None:
            continue
        seen.add(name)
        # importing a.b.c runs a/__init__ and a/b/__init__ first: their code counts too
        todo += [name.rsplit(".", k)[0] for k in range(1, name.count("."))]
        for imp in _module_imports(path.read_text(), name):
            top = imp.split(".")[0]
            if top == PACKAGE:
                todo.append(imp)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                external.add(top)
    return sorted(seen), sorted(external)


@lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def package_versions(names: list[str]) -> dict[str, str]:
    """Installed version of the distribution behind each import name ('absent' when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        dists = _distributions().get(name, [name])
        try:
            out[name] = version(dists[0])
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def commands(root: Path) -> dict[str, str]:
    """command -> module, read from lorarank/cli.py (and, for its `**{...}` entry, the training regimes' commands
    from lorarank/training/regimes.py) without importing them: `root` may be another checkout than the running one."""
    tree = _parse(Path(root) / PACKAGE / "cli.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMMANDS" for t in node.targets):
            out = {}
            for key, value in zip(node.value.keys, node.value.values):
                if key is None:
                    out |= _regime_commands(root)
                else:
                    out[ast.literal_eval(key)] = ast.literal_eval(value)[0]
            return out
    raise RuntimeError("COMMANDS not found in lorarank/cli.py")


def _regime_commands(root: Path) -> dict[str, str]:
    """command -> module of each `Regime(name, command, module, ...)` in lorarank/training/regimes.py."""
    tree = _parse(Path(root) / PACKAGE / "training" / "regimes.py")
    out = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Regime":
            args = dict(zip(("name", "command", "module"), call.args)) | {k.arg: k.value for k in call.keywords}
            out[ast.literal_eval(args["command"])] = ast.literal_eval(args["module"])
    return out


def describe(root: Path, command: str, container: str | None = None) -> dict:
    modules, external = closure(root, commands(root)[command])
    code = {m: hashlib.sha256(normalized(_module_file(Path(root), m)).encode()).hexdigest()[:16] for m in modules}
    env = {"container": container} if container else package_versions(external)
    digest = hashlib.sha256(repr((sorted(code.items()), sorted(env.items()))).encode()).hexdigest()[:16]
    return {"command": command, "fingerprint": digest, "modules": code, "environment": env}


def fingerprints(root: Path, containers: dict[str, str] | None = None) -> dict[str, str]:
    """command -> fingerprint, for every command (what the workflow puts into each rule's params)."""
    containers = containers or {}
    return {c: describe(root, c, containers.get(c))["fingerprint"] for c in commands(root)}


def configure(p) -> None:
    p.add_argument("command", nargs="?", help="one command (default: all)")
    p.add_argument("-v", "--verbose", action="store_true", help="list the modules and package versions")


def run(args) -> int:
    from lorarank.errors import UserError

    root = Path(__file__).resolve().parents[2]
    names = [args.command] if args.command else list(commands(root))
    for name in names:
        if name not in commands(root):
            raise UserError(f"command {name!r} is unknown (one of: {', '.join(commands(root))})")
        d = describe(root, name)
        print(f"{name}: {d['fingerprint']}")
        if args.verbose:
            for m, h in d["modules"].items():
                print(f"  module  {m}  {h}")
            for p, v in d["environment"].items():
                print(f"  package {p}=={v}")
    return 0
