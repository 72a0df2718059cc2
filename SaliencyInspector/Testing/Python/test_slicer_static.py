"""Static checks of the Slicer extension: what would silently break the installed module.

SaliencyInspector.py needs Slicer's Qt application to import, so it is checked with ``ast``;
the CMake lists, the .ui file, the catalog entry and the requirements are read as text/XML/JSON.
"""

from __future__ import annotations

import ast
import json
import os
import re
import xml.etree.ElementTree as ET
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[3]
MODULE = ROOT / "SaliencyInspector"
MODULE_PY = MODULE / "SaliencyInspector.py"
UI_FILE = MODULE / "Resources" / "UI" / "SaliencyInspector.ui"
CATALOG = ROOT / "SaliencyInspector.json"

# Facts from Slicer/Slicer Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}
CATALOG_PROPERTIES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                      "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int}
CATALOG_SCHEMA_ID = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#"
# Categories the ExtensionsIndex accepts (a subset that fits this extension)
CATEGORIES = {"Quantification", "Segmentation", "Utilities", "Analysis", "Informatics", "Examples"}


def cmake_list(text: str, variable: str) -> list[str]:
    """Entries of ``set(VARIABLE a b c)`` in a CMake file (comments removed)."""
    text = re.sub(r"#[^\n]*", "", text)
    match = re.search(r"set\(\s*" + re.escape(variable) + r"\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    return match.group(1).split()


def module_cmake() -> str:
    return (MODULE / "CMakeLists.txt").read_text()


def expand(entry: str) -> str:
    return entry.replace("${MODULE_NAME}", "SaliencyInspector")


# ---- CMake ------------------------------------------------------------------------------------
def test_every_python_file_is_listed_in_the_module_cmakelists():
    listed = [expand(e) for e in cmake_list(module_cmake(), "MODULE_PYTHON_SCRIPTS")]
    on_disk = sorted(str(p.relative_to(MODULE)) for p in MODULE.rglob("*.py")
                     if "Testing" not in p.parts and ".egg-info" not in str(p) and "__pycache__" not in p.parts)
    missing = sorted(set(on_disk) - set(listed))
    assert not missing, f"add these to MODULE_PYTHON_SCRIPTS in SaliencyInspector/CMakeLists.txt: {missing}"
    gone = [e for e in listed if not (MODULE / e).is_file()]
    assert not gone, f"listed in MODULE_PYTHON_SCRIPTS but not on disk: {gone}"
    assert len(listed) == len(set(listed))


def test_every_resource_is_listed_and_exists():
    listed = [expand(e) for e in cmake_list(module_cmake(), "MODULE_PYTHON_RESOURCES")]
    resources = MODULE / "Resources"
    on_disk = sorted(str(p.relative_to(MODULE)) for p in resources.rglob("*") if p.is_file()
                     and p.name != ".gitkeep" and not p.name.startswith("."))
    missing = sorted(set(on_disk) - set(listed))
    assert not missing, f"add these to MODULE_PYTHON_RESOURCES: {missing}"
    absent = [e for e in listed if not (MODULE / e).is_file()]
    models = [e for e in absent if e.startswith("Resources/Models/")]
    assert not [e for e in absent if e not in models], f"listed resources missing: {absent}"
    if models:
        pytest.skip(f"demo model files not generated yet ({', '.join(models)}; `saliency-inspector train-demo`)")


def test_module_cmakelists_builds_a_scripted_module_with_tests():
    text = module_cmake()
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text)
    assert "add_subdirectory(Testing)" in text
    assert (MODULE / "Testing" / "CMakeLists.txt").read_text().strip() == "add_subdirectory(Python)"
    assert (MODULE / "Testing" / "Python" / "CMakeLists.txt").is_file()


def test_top_level_cmakelists_has_the_extension_metadata():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(SaliencyInspector\)", text, re.M)
    values = dict(re.findall(r'set\((EXTENSION_[A-Z]+)\s+"([^"]*)"\)', text))
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert values.get(key, "").strip(), f"{key} is missing or empty"
    assert values["EXTENSION_DEPENDS"] == "PyTorch"
    assert values["EXTENSION_CATEGORY"] in CATEGORIES
    for url_key in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert values[url_key].startswith("https://")
    # the icon and screenshot the URLs point at are files of this repository
    for url_key, marker in (("EXTENSION_ICONURL", "/main/"), ("EXTENSION_SCREENSHOTURLS", "/main/")):
        relative = values[url_key].split(marker, 1)[1]
        assert (ROOT / relative).is_file() or url_key == "EXTENSION_SCREENSHOTURLS", relative
    # the supported range starts at 5.8 (SlicerConfigVersion.cmake refuses an older Slicer)
    assert re.search(r"find_package\(Slicer 5\.8 REQUIRED\)", text)
    for line in ("include(${Slicer_USE_FILE})", "add_subdirectory(SaliencyInspector)",
                 "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text, line


# ---- catalog entry ----------------------------------------------------------------------------
def test_catalog_entry_follows_the_extensions_index_schema():
    entry = json.loads(CATALOG.read_text())
    assert CATALOG_REQUIRED <= set(entry), f"missing {CATALOG_REQUIRED - set(entry)}"
    assert set(entry) <= set(CATALOG_PROPERTIES), f"not in the schema: {set(entry) - set(CATALOG_PROPERTIES)}"
    for key, value in entry.items():
        assert isinstance(value, CATALOG_PROPERTIES[key]), key
    assert entry["$schema"] == CATALOG_SCHEMA_ID
    assert entry.get("tier", 5) in (1, 3, 5)
    assert entry.get("scm_type", "git") in ("git", "local")
    assert all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    # ExtensionsIndex rules: json name == project(); the extension name does not start with
    # "Slicer", the repository name does; the category matches the CMake metadata
    assert CATALOG.stem == "SaliencyInspector" and not CATALOG.stem.startswith("Slicer")
    repository = entry["scm_url"].rstrip("/").split("/")[-1].removesuffix(".git")
    assert repository.startswith("Slicer"), repository
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert f'set(EXTENSION_CATEGORY "{entry["category"]}")' in cmake
    assert entry["build_dependencies"] == ["PyTorch"]


# ---- requirements -----------------------------------------------------------------------------
def test_requirements_list_only_what_slicer_lacks():
    lines = [line.strip() for line in (MODULE / "Resources" / "requirements.txt").read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]
    names = {r.name.lower() for r in requirements}
    # what the module imports that Slicer lacks (test_slicer_dependencies.py finds them by following the
    # imports): monai (MONAI models), captum (gradient/perturbation estimators), scikit-image (SSIM, SLIC)
    assert names == {"monai", "captum", "scikit-image"}
    assert not names & {"simpleitk", "vtk", "numpy", "torch", "torchvision"}
    for requirement in requirements:  # the versions this suite runs with satisfy them
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            pytest.skip(f"{requirement.name} not installed here")
        assert installed in requirement.specifier, f"{requirement.name} {installed} not in {requirement.specifier}"


# ---- the module file --------------------------------------------------------------------------
def module_tree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(), filename=str(MODULE_PY))


def classes() -> dict:
    return {node.name: node for node in module_tree().body if isinstance(node, ast.ClassDef)}


def ui_widgets() -> dict:
    """Widget name -> (class, {property name: text}) for every widget in the .ui file."""
    widgets = {}
    for widget in ET.parse(UI_FILE).getroot().iter("widget"):
        properties = {}
        for prop in widget.findall("property"):
            text = "".join(prop.itertext()).strip()
            properties[prop.get("name")] = text
        assert widget.get("name") not in widgets, f"duplicate widget name {widget.get('name')}"
        widgets[widget.get("name")] = (widget.get("class"), properties)
    return widgets


def test_module_has_the_template_classes():
    found = classes()
    for name, base in (("SaliencyInspector", "ScriptedLoadableModule"),
                       ("SaliencyInspectorWidget", "ScriptedLoadableModuleWidget"),
                       ("SaliencyInspectorLogic", "ScriptedLoadableModuleLogic"),
                       ("SaliencyInspectorTest", "ScriptedLoadableModuleTest")):
        assert name in found, name
        assert base in [b.id for b in found[name].bases if isinstance(b, ast.Name)], name
    parameter_node = found["SaliencyInspectorParameterNode"]
    assert [d.id for d in parameter_node.decorator_list if isinstance(d, ast.Name)] == ["parameterNodeWrapper"]
    tests = [f.name for f in found["SaliencyInspectorTest"].body if isinstance(f, ast.FunctionDef)]
    assert "runTest" in tests and any(t.startswith("test_") for t in tests)


def test_every_ui_widget_used_by_the_widget_exists_in_the_ui_file():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text()))
    widgets = ui_widgets()
    missing = sorted(used - set(widgets))
    assert not missing, f"self.ui.<name> used but not in {UI_FILE.name}: {missing}"
    assert len(used) > 10


def test_ui_parameter_bindings_match_the_parameter_node_fields():
    fields = {node.target.id: node for node in classes()["SaliencyInspectorParameterNode"].body
              if isinstance(node, ast.AnnAssign)}
    bound = {name: props["SlicerParameterName"] for name, (_cls, props) in ui_widgets().items()
             if "SlicerParameterName" in props}
    unknown = {w: p for w, p in bound.items() if p not in fields}
    assert not unknown, f"SlicerParameterName not a parameter node field: {unknown}"
    for field in ("inputVolume", "segmentation", "hirescam", "gradcam", "device", "threshold", "opacity"):
        assert field in bound.values(), f"{field} is not bound to a widget"


def test_ui_custom_widgets_are_declared():
    root = ET.parse(UI_FILE).getroot()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    qt_classes = {c for c in used if c.startswith("Q")}
    assert used - qt_classes <= declared, f"undeclared custom widgets: {used - qt_classes - declared}"


def test_logic_is_a_thin_layer_and_the_glue_never_uses_slicer_singletons():
    """Nodes are made by saliency_inspector.mrml / mrml_charts (tested on real MRML), not by the
    module's Logic; the glue takes the scene and logics as arguments."""
    found = classes()
    logic_source = ast.get_source_segment(MODULE_PY.read_text(), found["SaliencyInspectorLogic"])
    assert "AddNewNodeByClass" not in logic_source
    assert "mrml." in logic_source
    for glue in ("mrml.py", "mrml_charts.py"):
        tree = ast.parse((MODULE / "saliency_inspector" / glue).read_text())
        attributes = {f"{n.value.id}.{n.attr}" for n in ast.walk(tree)
                      if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
        assert not {"slicer.mrmlScene", "slicer.app", "slicer.modules", "slicer.util"} & attributes, glue
        imports = {alias.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                   for alias in n.names}
        assert not {"qt", "ctk", "slicer.util"} & imports, glue


def test_core_package_does_not_import_slicer_or_qt():
    for path in (MODULE / "saliency_inspector").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in ("qt", "ctk", "__main__"), f"{path.name} imports {name}"
                if top == "slicer":
                    assert path.name == "mrml.py", f"{path.name} imports {name}; only mrml.py may touch MRML"


def test_module_calls_into_the_core_match_the_core_signatures():
    """Every call from SaliencyInspector.py into saliency_inspector (mrml.x(...), explain(...), …)
    names a function that exists and binds to its signature: API drift fails here, not in Slicer."""
    import importlib
    import importlib.util
    import inspect

    tree = module_tree()
    modules, functions = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("saliency_inspector"):
            for alias in node.names:
                package = importlib.import_module(node.module)
                if hasattr(package, "__path__") and importlib.util.find_spec(f"{node.module}.{alias.name}"):  # from saliency_inspector.scoring import metrics
                    modules[alias.asname or alias.name] = importlib.import_module(f"{node.module}.{alias.name}")
                else:  # from saliency_inspector.explainers.explanation import explain
                    target = importlib.import_module(node.module)
                    functions[alias.asname or alias.name] = getattr(target, alias.name)
    checked = 0
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        func = call.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in modules:
            module = modules[func.value.id]
            assert hasattr(module, func.attr), f"{module.__name__}.{func.attr} does not exist (line {call.lineno})"
            target = getattr(module, func.attr)
        elif isinstance(func, ast.Name) and func.id in functions:
            target = functions[func.id]
        else:
            continue
        if not inspect.isfunction(target):  # classes (InputError, ...) are not checked here
            continue
        if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
            continue
        signature = inspect.signature(target)
        try:
            signature.bind(*[None] * len(call.args), **{k.arg: None for k in call.keywords})
        except TypeError as err:
            raise AssertionError(f"line {call.lineno}: {getattr(target, '__name__', target)}{signature}: {err}") from None
        checked += 1
    assert checked >= 15, checked


def _module_function(name: str):
    """One module-level helper of SaliencyInspector.py, compiled on its own (the file needs Qt)."""
    node = next(n for n in module_tree().body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(MODULE_PY), "exec"), namespace)
    return namespace[name]


def test_missing_requirements_are_found_from_the_requirements_file(tmp_path):
    import sys

    sys.path.insert(0, str(MODULE))
    from SaliencyInspectorLib import dependencies

    path = MODULE / "Resources" / "requirements.txt"
    assert dependencies.missing_requirements(dependencies.load_requirements(path)) == []  # all installed here
    needs = tmp_path / "requirements.txt"
    needs.write_text("# comment\nnumpy>=1.0\nnumpy<1.0\nno-such-package-saliency-inspector>=1\n-c constraints.txt\n"
                     "numpy<1.0; python_version < '3.0'\n")
    missing = dependencies.missing_requirements(dependencies.load_requirements(needs))
    assert [str(r) for r in missing] == ["numpy<1.0", "no-such-package-saliency-inspector>=1"]


def test_cuda_out_of_memory_is_recognised_for_the_cpu_fallback():
    torch = pytest.importorskip("torch")
    is_oom = _module_function("_isCudaOutOfMemory")
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    # explain() turns model errors into an InputError that keeps torch's first line
    from saliency_inspector.errors import InputError

    assert is_oom(InputError("model 'x' rejected its input of shape (1, 1, 64, 96, 96): CUDA out of memory. "
                             "Tried to allocate 2.00 GiB"))
    assert not is_oom(InputError("model 'x' rejected its input: expected 5D input"))
    assert not is_oom(ValueError("something else"))


def test_node_selectors_offer_the_node_type_of_their_parameter():
    """A qMRMLNodeComboBox bound to a parameter must list exactly that field's MRML class, or
    parameterNodeWrapper refuses the binding when the module opens."""
    fields = {node.target.id: ast.unparse(node.annotation) for node in classes()["SaliencyInspectorParameterNode"].body
              if isinstance(node, ast.AnnAssign)}
    root = ET.parse(UI_FILE).getroot()
    checked = 0
    for widget in root.iter("widget"):
        if widget.get("class") != "qMRMLNodeComboBox":
            continue
        props = {p.get("name"): p for p in widget.findall("property")}
        parameter = "".join(props["SlicerParameterName"].itertext()).strip()
        node_types = [s.text for s in props["nodeTypes"].iter("string")]
        assert node_types == [fields[parameter]], (widget.get("name"), node_types, fields[parameter])
        checked += 1
    assert checked == 3


def test_no_function_makes_a_module_global_local():
    """`import slicer.pydeps` inside a function makes `slicer` local to the whole function, so an
    earlier `slicer.util...` call raises UnboundLocalError in Slicer. No function of the module may
    bind a name that the module imports at top level."""
    import symtable

    source = MODULE_PY.read_text()
    top = symtable.symtable(source, "SaliencyInspector.py", "exec")
    imported = {s.get_name() for s in top.get_symbols() if s.is_imported()}

    def functions(table):
        for child in table.get_children():
            if child.get_type() == "function":
                yield child
            yield from functions(child)

    clashes = [(f.get_name(), s.get_name()) for f in functions(top) for s in f.get_symbols()
               if s.get_name() in imported and s.is_local() and not s.is_global()]
    assert clashes == []


def test_license_at_the_repository_root():
    """Slicer/ExtensionsIndex scripts/check_description_files.py (check_license_file) looks for
    LICENSE, LICENCE, License.txt, ... at the root; pyproject.toml says Apache-2.0."""
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()


# ---- every slicer.* name the module uses, and the Slicer versions that have it ---------------------
# Read from Slicer's source (github.com/Slicer/Slicer) at v5.8.1, v5.10.0, v5.12.0 and main; the
# file where each is defined is given so the table can be re-checked (see the test below).
ALL = ("5.8", "5.10", "5.12", "main")
SLICER_API = {
    # Base/Python/slicer/util.py
    **{f"slicer.util.{n}": (ALL, "Base/Python/slicer/util.py", rf"^(def|class) {n}\b")
       for n in ("loadUI", "childWidgetVariables", "tryWithErrorDisplay", "errorDisplay", "warningDisplay",
                 "confirmOkCancelDisplay", "pip_install", "getNodesByClass", "addVolumeFromArray",
                 "VTKObservationMixin", "_executePythonModule", "getModuleLogic")},
    "slicer.util.executePythonModule": (("5.12", "main"), "Base/Python/slicer/util.py", r"^def executePythonModule\b"),
    "slicer.packaging": (("5.12", "main"), "Base/Python/slicer/packaging.py", r"^def pip_ensure\("),
    "slicer.packaging.pip_ensure": (("5.12", "main"), "Base/Python/slicer/packaging.py",
                                    r"^def pip_ensure\(\s*requirements.*\s*constraints.*\s*skip_packages.*\s*prompt_install"),
    "slicer.i18n": (ALL, "Base/Python/slicer/i18n.py", r"^def tr\b"),
    "slicer.i18n.tr": (ALL, "Base/Python/slicer/i18n.py", r"^def tr\(text\)"),
    "slicer.i18n.translate": (ALL, "Base/Python/slicer/i18n.py", r"^def translate\(context, text\)"),
    "slicer.parameterNodeWrapper": (ALL, "Base/Python/slicer/parameterNodeWrapper/__init__.py", r"from \.wrapper import"),
    "slicer.parameterNodeWrapper.parameterNodeWrapper": (ALL, "Base/Python/slicer/parameterNodeWrapper/wrapper.py",
                                                         r"^def parameterNodeWrapper\("),
    "slicer.parameterNodeWrapper.WithinRange": (ALL, "Base/Python/slicer/parameterNodeWrapper/validators.py",
                                                r"^class WithinRange\("),
    "slicer.ScriptedLoadableModule": (ALL, "Base/Python/slicer/ScriptedLoadableModule.py", r"^class ScriptedLoadableModule:"),
    **{f"slicer.ScriptedLoadableModule.{n}": (ALL, "Base/Python/slicer/ScriptedLoadableModule.py", rf"^class {n}\b")
       for n in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                 "ScriptedLoadableModuleTest")},
    # Base/QTCore/qSlicerCoreApplication.h, Base/QTGUI/qSlicerApplication.h, qMRMLLayoutManager.h
    "slicer.app": (ALL, "Base/Python/slicer/__init__.py", r"app"),
    "slicer.app.temporaryPath": (ALL, "Base/QTCore/qSlicerCoreApplication.h", r"Q_PROPERTY\(QString temporaryPath"),
    "slicer.app.applicationLogic": (ALL, "Base/QTCore/qSlicerCoreApplication.h", r"applicationLogic\(\) const"),
    "slicer.app.testingEnabled": (ALL, "Base/QTCore/qSlicerBaseQTCorePythonQtDecorators.h", r"qSlicerCoreApplication_testingEnabled"),
    "slicer.app.layoutManager": (ALL, "Base/QTGUI/qSlicerApplication.h", r"layoutManager\(\)\s*const"),
    "slicer.app.processEvents": (ALL, "Base/QTCore/qSlicerCoreApplication.h", r"class Q_SLICER_BASE_QTCORE_EXPORT qSlicerCoreApplication\s*:\s*public QApplication"),
    "slicer.app.connect": (ALL, "Base/QTGUI/qSlicerApplication.h", r"void startupCompleted\(\);"),
    "slicer.mrmlScene": (ALL, "Base/Python/slicer/__init__.py", r"slicer\.mrmlScene == slicer\.app\.mrmlScene\(\)"),
    "slicer.util": (ALL, "Base/Python/slicer/util.py", r"^def "),
    "slicer.modules": (ALL, "Base/Python/slicer/__init__.py", r"modules"),
    # loadable modules whose logic() the module uses
    "slicer.modules.segmentations": (ALL, "Modules/Loadable/Segmentations/CMakeLists.txt", r"Segmentations"),
    "slicer.modules.volumerendering": (ALL, "Modules/Loadable/VolumeRendering/CMakeLists.txt", r"VolumeRendering"),
    "slicer.modules.colors": (ALL, "Modules/Loadable/Colors/CMakeLists.txt", r"Colors"),
}
# qMRMLLayoutManager (Libs/MRML/Widgets/qMRMLLayoutManager.h), reached through slicer.app.layoutManager()
LAYOUT_MANAGER_API = {n: (ALL, "Libs/MRML/Widgets/qMRMLLayoutManager.h", p) for n, p in (
    ("layoutLogic", r"vtkMRMLLayoutLogic\* layoutLogic\(\)\s*const"), ("sliceWidget", r"sliceWidget\(const QString& name\)"),
    ("resetSliceViews", r"void resetSliceViews\(\)"))}
# the Sample Data module's API (Modules/Scripted/SampleData/SampleData.py), used at startup
SAMPLE_DATA_API = {
    "registerCustomSampleDataSource": (ALL, "Modules/Scripted/SampleData/SampleData.py",
                                       r"def registerCustomSampleDataSource\(category=\"Custom\",\s*sampleName=None, uris=None, "
                                       r"fileNames=None, nodeNames=None,\s*customDownloader=None, thumbnailFileName=None,\s*"
                                       r"loadFileTypes=None"),
    "registerUrlRewriteRule": (("5.10", "5.12", "main"), "Modules/Scripted/SampleData/SampleData.py",
                               r"def registerUrlRewriteRule\(name, rewriteFunction\)"),
}
# names used only behind a check for the running Slicer's version (with a fallback for older ones)
SCENE_METHODS_USED: set = set()
GUARDED = {"slicer.packaging", "slicer.packaging.pip_ensure", "slicer.util.executePythonModule"}
MODULE_FILES = [MODULE_PY, *sorted((MODULE / "SaliencyInspectorLib").glob("*.py"))]


def slicer_names_used() -> dict:
    """Every ``slicer.a`` / ``slicer.a.b`` the module's files use (attributes, imports, import_module
    strings), with a line number. MRML/VTK classes (``slicer.vtk*``) are checked on slicer-core instead."""
    used = {}
    scene_methods = SCENE_METHODS_USED
    for path in MODULE_FILES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Attribute):
                chain, inner = [node.attr], node.value
                while isinstance(inner, ast.Attribute):
                    chain.insert(0, inner.attr)
                    inner = inner.value
                if isinstance(inner, ast.Name) and inner.id == "slicer":
                    # slicer.mrmlScene.X: methods of vtkMRMLScene, checked on slicer-core below
                    names.append(".".join(["slicer", *chain[:1 if chain[0] == "mrmlScene" else 2]]))
                    if chain[0] == "mrmlScene" and len(chain) > 1:
                        scene_methods.add(chain[1])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "slicer":
                names += [f"{node.module}.{a.name}" if node.module != "slicer" else f"slicer.{a.name}" for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"slicer\.\w+", node.value):
                names.append(node.value)
            for name in names:
                used.setdefault(name, f"{path.name}:{node.lineno}")
    return used


def test_every_slicer_name_the_module_uses_is_in_the_version_table():
    used = slicer_names_used()
    vtk_classes = {n for n in used if re.fullmatch(r"slicer\.vtk\w+", n)}
    unknown = {n: where for n, where in used.items() if n not in SLICER_API and n not in vtk_classes}
    assert not unknown, f"slicer names used but not in SLICER_API (add them with the versions that have them): {unknown}"
    for name in used.keys() - vtk_classes:
        versions = SLICER_API[name][0]
        if name not in GUARDED:
            assert {"5.8", "5.10", "5.12"} <= set(versions), f"{name} ({used[name]}) is missing in some of Slicer 5.8-5.12"
    # MRML classes: real ones (slicer-core has them)
    slicer = pytest.importorskip("slicer")
    for name in vtk_classes:
        assert hasattr(slicer, name.split(".")[1]), name
    missing = {m for m in SCENE_METHODS_USED if not hasattr(slicer.vtkMRMLScene, m)}
    assert SCENE_METHODS_USED and not missing, missing
    # the layout manager's methods the Logic calls
    source = MODULE_PY.read_text()
    called = set(re.findall(r"layoutManager\.(\w+)\(", source))
    assert called and called <= set(LAYOUT_MANAGER_API), called - set(LAYOUT_MANAGER_API)
    sample_data = set(re.findall(r"SampleData\.SampleDataLogic\.(\w+)", source))
    assert sample_data == set(SAMPLE_DATA_API)
    assert 'hasattr(SampleData.SampleDataLogic, "registerUrlRewriteRule")' in source  # 5.8 lacks it


def test_guarded_names_are_only_used_behind_a_fallback():
    source = MODULE_PY.read_text()
    assert 'getattr(slicer.util, "executePythonModule", None) or slicer.util._executePythonModule' in source
    assert 'importlib.import_module("slicer.packaging")' in source and "except ImportError" in source


SLICER_SOURCE = Path(os.environ.get("SLICER_SOURCE", "/work/.mirror/Slicer+Slicer/repo"))
TAGS = {"5.8": "v5.8.1", "5.10": "v5.10.0", "5.12": "v5.12.0", "main": "main"}


@pytest.mark.skipif(not (SLICER_SOURCE / "HEAD").exists() and not (SLICER_SOURCE / ".git").exists(),
                    reason="no clone of github.com/Slicer/Slicer (set SLICER_SOURCE)")
def test_version_table_matches_the_slicer_source():
    import subprocess

    def show(tag, path):
        run = subprocess.run(["git", "-C", str(SLICER_SOURCE), "show", f"{tag}:{path}"], capture_output=True, text=True)
        return run.stdout if run.returncode == 0 else None

    for name, (versions, path, pattern) in {**SLICER_API, **LAYOUT_MANAGER_API, **SAMPLE_DATA_API}.items():
        for version, tag in TAGS.items():
            text = show(tag, path)
            found = text is not None and re.search(pattern, text, re.M) is not None
            assert found == (version in versions), f"{name}: {path} at {tag} {'has' if found else 'lacks'} it"


def test_help_link_and_category_follow_the_template():
    """The help links to this extension's documentation (EXTENSION_HOMEPAGE), not to a Slicer core
    page; the category uses the template's translation context (Utilities/Templates/Modules/Scripted)."""
    source = MODULE_PY.read_text()
    assert "getDefaultModuleDocumentationLink()\n" not in source and "+= self.getDefaultModuleDocumentationLink" not in source
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE "([^"]+)"\)', (ROOT / "CMakeLists.txt").read_text()).group(1)
    assert f'HOMEPAGE = "{homepage}"' in source and '{HOMEPAGE}#in-3d-slicer' in source
    assert "## In 3D Slicer" in (ROOT / "README.md").read_text()  # the anchor the link points at
    category = re.search(r"CATEGORY \"(\w+)\"", (ROOT / "CMakeLists.txt").read_text().replace("EXTENSION_CATEGORY", "CATEGORY"))
    assert f'self.parent.categories = [translate("qSlicerAbstractCoreModule", "{category.group(1)}")]' in source
