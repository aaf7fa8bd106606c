"""The layout of ../shared/DESIGN.md, enforced: who may import whom, and where heavy imports may sit.

Packages are grouped by where they may run. A robot runs ``contract`` + ``robot`` + ``ros`` with numpy,
onnxruntime and rclpy only, so nothing there may pull torch, mujoco or ray in at import time; training
machines run the rest. Every import of a ``mpo_ros`` module (also those inside functions) is checked
against the table below, and no module imports a private name (``_x``) of another.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mpo_ros"

# package -> the packages of ours it may import (its own always allowed). Top-level modules are named
# by their module name. Exceptions carry their reason.
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),
    "errors": set(),
    "config": {"errors"},
    "contract": {"errors"},
    "robot": {"errors", "contract"},
    "mpo": {"errors", "config"},
    # bag2data relabels rewards with MuJoCo kinematics (mpo_ros_sim) and can act with an ONNX policy.
    "data": {"errors", "config", "contract", "robot", "mpo_ros_sim", "__init__"},
    # evaluation and export run the deployed artifact through the robot's own ONNX runtime.
    "training": {"errors", "config", "contract", "robot", "mpo", "data", "mpo_ros_sim", "__init__"},
    "calibration": {"errors", "config", "contract", "robot", "data", "mpo_ros_sim", "__init__"},
    # excite_node plays mpo_ros.calibration.signals (numpy only; the mujoco-importing fit is never imported).
    "ros": {"errors", "config", "contract", "robot", "data", "mpo_ros_sim", "calibration"},
    "tools": {"*"},
    "cli": {"errors"},  # commands are imported lazily by name (importlib), never statically
}
# Modules of the robot side that have not moved into robot/ yet count as robot/.
ROBOT_MODULES: set[str] = set()  # (all robot-side modules live in robot/ now)
HEAVY = {"torch", "mujoco", "ray"}
HEAVY_ALLOWED = {"mpo", "training", "calibration"}


def _group(module: str) -> str:
    """'mpo_ros.training.loop' -> 'training'; robot-side top-level modules -> 'robot'."""
    parts = module.split(".")
    if parts[0] == "mpo_ros_sim":
        return "mpo_ros_sim"
    if len(parts) == 1:
        return "__init__"
    return "robot" if parts[1] in ROBOT_MODULES else parts[1]


def _imports(tree: ast.AST) -> list[tuple[str, list[str], bool]]:
    """(module, imported names, at module level) for every import in a file."""
    found = []
    top = {id(node) for node in getattr(tree, "body", [])}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], id(node) in top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], id(node) in top))
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        out.append((name, path))
    return out


def test_packages_import_only_what_the_design_allows() -> None:
    problems = []
    for name, path in _modules():
        group = _group(name)
        allowed = ALLOWED.get(group)
        assert allowed is not None, (
            f"{name}: package '{group}' is not in DESIGN.md's layout (add it to ALLOWED)"
        )
        for module, names, _ in _imports(ast.parse(path.read_text())):
            if module == "mpo_ros" and names:  # `from mpo_ros import x`: x is the module imported
                targets = [f"mpo_ros.{n}" for n in names if n != "__version__"] or ["mpo_ros"]
            elif module.startswith(("mpo_ros.", "mpo_ros_sim")) or module == "mpo_ros":
                targets = [module]
            else:
                continue
            for target in targets:
                other = _group(target)
                if other != group and "*" not in allowed and other not in allowed:
                    problems.append(f"{name} imports {target} ({group} may import {sorted(allowed)})")
    assert not problems, "\n".join(problems)


def test_no_module_imports_a_private_name_of_another() -> None:
    problems = []
    for name, path in _modules():
        for module, names, _ in _imports(ast.parse(path.read_text())):
            if module.startswith("mpo_ros") and module != name:
                problems += [
                    f"{name}: from {module} import {n}"
                    for n in names
                    if n.startswith("_") and not n.startswith("__")  # dunders (__version__) are public
                ]
        problems += _private_attribute_uses(name, ast.parse(path.read_text()))
    assert not problems, "\n".join(problems)


def _private_attribute_uses(name: str, tree: ast.AST) -> list[str]:
    """``module._name`` where ``module`` is one of ours imported under an alias (how the old offline loop
    reached into train.py: ``training_loop._Loop``)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "mpo_ros":
            aliases.update({a.asname or a.name: f"mpo_ros.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            aliases.update(
                {a.asname: a.name for a in node.names if a.asname and a.name.startswith("mpo_ros")}
            )
    return [
        f"{name}: {aliases[node.value.id]}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]


def test_heavy_libraries_are_imported_lazily_outside_the_training_side() -> None:
    """`mpo-ros serve` on a robot must start without torch, mujoco or ray installed."""
    problems = []
    for name, path in _modules():
        if _group(name) in HEAVY_ALLOWED:
            continue
        for module, _, at_top in _imports(ast.parse(path.read_text())):
            if at_top and module.split(".")[0] in HEAVY:
                problems.append(f"{name} imports {module} at module level")
    assert not problems, "\n".join(problems)


def test_the_two_training_loops_are_gone() -> None:
    assert not (PACKAGE / "train.py").exists() and not (PACKAGE / "data" / "training.py").exists()
