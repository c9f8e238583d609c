"""The layer contract: geoseg's sub-packages import only downwards, also inside functions; the foundation
modules (errors, progress) import no package; no import cycle between modules; ``import geoseg`` is light and
every public name resolves."""

import ast
import subprocess
import sys
from pathlib import Path

import geoseg

PACKAGE = Path(geoseg.__file__).parent
#: Bottom to top: a module may import from its own layer and the layers before it.
LAYERS = ["io", "outputs", "data", "models", "training", "inference", "evaluation", "cli"]
FOUNDATION = {"errors", "progress"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, geoseg module) of every import in ``path``, also those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "geoseg":
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "geoseg" else []
            found += [(node.lineno, m) for m in [node.module, *names]]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "geoseg"]
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "geoseg":
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module != "geoseg"]
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.name != "__main__.py" and p != PACKAGE / "__init__.py")


def test_every_package_imports_only_from_the_layers_below_it():
    upward = []
    for path in sources():
        own = layer_of(module_name(path))
        for line, target in imports(path):
            theirs = layer_of(target)
            if theirs in FOUNDATION or theirs is None or theirs == "__version__":
                continue
            if own in FOUNDATION or LAYERS.index(theirs) > LAYERS.index(own):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert upward == []


def test_every_module_belongs_to_a_layer():
    assert {layer_of(module_name(p)) for p in sources()} <= set(LAYERS) | FOUNDATION
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(LAYERS)


def test_no_import_cycle_between_modules_also_through_imports_inside_functions():
    modules = {module_name(p): p for p in sources()}
    edges = {m: {t for _, t in imports(p) if t in modules and t != m} for m, p in modules.items()}
    visiting, done, cycles = set(), set(), []

    def visit(m, trail):
        if m in visiting:
            cycles.append(trail[trail.index(m):] + [m])
            return
        if m in done:
            return
        visiting.add(m)
        for t in sorted(edges[m]):
            visit(t, trail + [m])
        visiting.discard(m)
        done.add(m)

    for m in sorted(modules):
        visit(m, [])
    assert cycles == []


def test_each_package_says_what_it_holds():
    for layer in LAYERS[:-1]:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc) > 80, layer


def test_import_geoseg_is_light_and_every_public_name_resolves():
    code = ("import sys, geoseg; light = 'torch' not in sys.modules; "
            "[getattr(geoseg, n) for n in geoseg.__all__]; print(light)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
    assert {"train", "predict", "predict_region", "evaluate", "export", "load_model", "RunConfig",
            "PredictOptions", "ClassSchema", "GeoGrid"} <= set(geoseg.__all__)


#: Modules without a test file of their own, and the test file that exercises each, with a word that file must
#: contain to show it does (a function, a constant or the command the module defines).
COVERED_BY = {
    "cli/_app": ("test_bad_input.py", "geoseg: error:"),
    "cli/model": ("test_export.py", '"export"'),
    "cli/project": ("test_own_data.py", '"init"'),
    "cli/train": ("test_cli.py", '"train"'),
    "data/noise": ("test_sample_data.py", "render"),
    "data/project": ("test_own_data.py", "geoseg.data.project"),
    "data/synth": ("test_sample_data.py", "geoseg.data.synth"),
    "errors": ("test_bad_input.py", "exit"),
    "evaluation/scoring": ("test_evaluate.py", "geoseg.evaluation.scoring"),
    "inference/schedule": ("test_distributed.py", "geoseg.inference.schedule"),
    "io/classes": ("test_labels.py", "ClassSchema"),
    "io/formats": ("test_qgis.py", ".fgb"),
    "io/geodesy": ("test_measures.py", "geoseg.io.geodesy"),
    "models/engine_speed": ("test_engines.py", "geoseg.models.engine_speed"),
    "models/onnx_runtime": ("test_engines.py", "geoseg.models.onnx_runtime"),
    "outputs/panels": ("test_report.py", "geoseg.outputs.panels"),
    "outputs/polygons": ("test_vectorize.py", "geoseg.outputs.polygons"),
    "progress": ("test_progress_lines.py", "GEOSEG_PROGRESS"),
}


def test_every_module_has_a_test_file_or_a_named_one_that_exercises_it():
    tests = Path(__file__).parent
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name.startswith("__"):
            continue
        module = path.relative_to(PACKAGE).with_suffix("").as_posix()
        if (tests / f"test_{path.stem.lstrip('_')}.py").is_file():
            assert module not in COVERED_BY, f"{module} has its own test file now; drop it from COVERED_BY"
            continue
        assert module in COVERED_BY, f"{module} has no test file of its own and none is named for it"
        test_file, word = COVERED_BY[module]
        assert word in (tests / test_file).read_text(encoding="utf-8"), (module, test_file, word)
