"""Stand-ins for what only the 3D Slicer application provides, over real MRML (slicer-core).

``install(monkeypatch)`` puts them in place BEFORE ``SaliencyInspector.py`` is imported: the module
then runs on a real scene with the real segmentations, volume rendering and colour logics, and
the real ``slicer.util``. Only what exists solely inside the application is replaced, each by a
few lines that keep the real signatures (read in Slicer's source, tags v5.8.1 to v5.12.0):

- ``qt``, ``ctk``: empty modules (the Logic never touches Qt);
- ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``, ``slicer.i18n``
  (Base/Python/slicer/...): the base classes, the decorator and the translation functions;
- ``slicer.app`` (qSlicerCoreApplication): temporaryPath, layoutManager() (None = no main
  window, or a stand-in over a real vtkMRMLLayoutLogic), applicationLogic(), processEvents(),
  connect(), testingEnabled();
- ``slicer.modules.<name>.logic()`` for segmentations, volumerendering, colors;
- the message boxes of ``slicer.util`` (they need Qt) and its pip functions (they would run pip);
- ``SampleData``, ``PyTorchUtils`` and (Slicer >= 5.12) ``slicer.packaging``: a few lines each.
"""

from __future__ import annotations

import os
import sys
import types
import unittest
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2]


class Recorder:
    """What the module showed or asked: message boxes, pip calls, PyTorchUtils calls."""

    def __init__(self):
        self.messages = []  # (kind, text)
        self.confirm_answer = True
        self.pip_calls = []
        self.torch_installs = []
        self.torch_asked = []  # installTorch's askConfirmation of each call

    def boxes(self, kind=None):
        return [m for m in self.messages if kind is None or m[0] == kind]


# ---- slicer.ScriptedLoadableModule (Base/Python/slicer/ScriptedLoadableModule.py) ----------------
def _scripted_loadable_module(slicer):
    m = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent
            self.moduleName = self.__class__.__name__

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = self.__class__.__name__.removesuffix("Logic")
            self.isSingletonParameterNode = True

        def getParameterNode(self):  # the real method, over slicer.mrmlScene
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
                node.SetSingletonTag(self.moduleName)
                node.SetAttribute("ModuleName", self.moduleName)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=1000):
            print(message)

    m.ScriptedLoadableModule, m.ScriptedLoadableModuleWidget = ScriptedLoadableModule, ScriptedLoadableModuleWidget
    m.ScriptedLoadableModuleLogic, m.ScriptedLoadableModuleTest = ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest
    return m


# ---- slicer.parameterNodeWrapper, slicer.i18n -----------------------------------------------------
def _parameter_node_wrapper():
    m = types.ModuleType("slicer.parameterNodeWrapper")

    def parameterNodeWrapper(classtype):  # the widget's GUI binding is not exercised here
        return classtype

    class WithinRange:  # validators.py: WithinRange(minimum, maximum)
        def __init__(self, minimum, maximum):
            self.minimum, self.maximum = minimum, maximum

    m.parameterNodeWrapper, m.WithinRange = parameterNodeWrapper, WithinRange
    return m


def _i18n():
    m = types.ModuleType("slicer.i18n")
    m.tr = lambda text: text  # i18n.py: tr(text), translate(context, text)
    m.translate = lambda context, text: text
    return m


# ---- slicer.app and the layout manager --------------------------------------------------------------
class LayoutManager:
    """qMRMLLayoutManager's methods the module calls, over a real vtkMRMLLayoutLogic."""

    def __init__(self, scene):
        import slicer

        self.scene = scene
        self._logic = slicer.vtkMRMLLayoutLogic()
        self._logic.SetMRMLScene(scene)
        self.calls = []

    def layoutLogic(self):
        return self._logic

    def sliceWidget(self, name):  # None for a view the layout does not have, as in Slicer
        node = self.scene.GetSingletonNode(name, "vtkMRMLSliceNode")
        return types.SimpleNamespace(mrmlSliceNode=lambda: node) if node is not None else None

    def resetSliceViews(self):
        self.calls.append("resetSliceViews")


class App:
    """slicer.app (qSlicerApplication) without a main window unless a layout manager is given."""

    def __init__(self, app_logic, temporary_path, layout_manager=None):
        self._app_logic, self._layout_manager = app_logic, layout_manager
        self.temporaryPath = str(temporary_path)
        self.connections = []

    def layoutManager(self):
        return self._layout_manager

    def applicationLogic(self):
        return self._app_logic

    def processEvents(self, *args):
        pass

    def connect(self, signal, slot):
        self.connections.append((signal, slot))

    def testingEnabled(self):
        return False

    def setOverrideCursor(self, cursor):  # tryWithErrorDisplay(waitCursor=True)
        pass

    def restoreOverrideCursor(self):
        pass


# ---- SampleData, PyTorchUtils, slicer.packaging -------------------------------------------------------
def _sample_data(slicer):
    """SampleData.SampleDataLogic.registerCustomSampleDataSource (SampleData.py, same parameters)."""
    m = types.ModuleType("SampleData")

    class SampleDataLogic:
        @staticmethod
        def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,
                                           nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                           loadFileTypes=None, loadFiles=None, loadFileProperties={},
                                           checksums=None, loadFileType=None):
            sources = slicer.modules.sampleDataSources.setdefault(category, [])
            sources.append(types.SimpleNamespace(**{k: v for k, v in locals().items() if k != "sources"}))

    def registerUrlRewriteRule(name, rewriteFunction):  # Slicer >= 5.10
        slicer.modules.sampleDataUrlRewriteRules[name] = rewriteFunction

    SampleDataLogic.registerUrlRewriteRule = staticmethod(registerUrlRewriteRule)
    m.SampleDataLogic = SampleDataLogic
    return m


def _pytorch_utils(recorder):
    """PyTorchUtils.PyTorchUtilsLogic (fepegar/SlicerPyTorch): torchInstalled(), installTorch(...)."""
    m = types.ModuleType("PyTorchUtils")

    class PyTorchUtilsLogic:
        installed = True  # tests set this to False for a fresh install
        install_result = "torch"  # what installTorch returns (None: declined)

        @staticmethod
        def torchInstalled():
            return PyTorchUtilsLogic.installed

        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                         torchvisionVersionRequirement=None):
            recorder.torch_installs.append(torchVersionRequirement)
            recorder.torch_asked.append(askConfirmation)
            return PyTorchUtilsLogic.install_result

    m.PyTorchUtilsLogic = PyTorchUtilsLogic
    return m


def packaging_module(recorder, fail=None):
    """slicer.packaging of Slicer >= 5.12: pip_ensure with its real parameters. Like the real one,
    it raises RuntimeError when the user declines and shows its own error box before raising
    CalledProcessError when pip fails."""
    import slicer

    m = types.ModuleType("slicer.packaging")

    def pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
                   requester=None, skip_in_testing=True, show_progress=True):
        recorder.pip_calls.append(("pip_ensure", [str(r) for r in requirements], constraints, requester))
        if prompt_install and not recorder.confirm_answer:
            raise RuntimeError("User declined package installation")
        if fail is not None:
            slicer.util.errorDisplay("Package installation failed.")
            raise fail

    m.pip_ensure = pip_ensure
    return m


# ---- install ----------------------------------------------------------------------------------------
def install(monkeypatch, app, temporary_path, layout_manager=None):
    """Put every stand-in in place (undone by ``monkeypatch``); returns the Recorder."""
    import slicer
    import slicer.util

    recorder = Recorder()
    colors = slicer.vtkSlicerColorLogic()  # what slicer.modules.colors.logic() is in Slicer
    colors.SetMRMLApplicationLogic(app.app_logic)  # before the scene (it registers the legend node class)
    colors.SetMRMLScene(app.scene)

    qt = types.ModuleType("qt")
    qt.Qt = types.SimpleNamespace(WaitCursor=3, BusyCursor=16)  # tryWithErrorDisplay(waitCursor=True)
    for name, module in (("qt", qt), ("ctk", types.ModuleType("ctk")),
                         ("SampleData", _sample_data(slicer)), ("PyTorchUtils", _pytorch_utils(recorder)),
                         ("slicer.ScriptedLoadableModule", _scripted_loadable_module(slicer)),
                         ("slicer.parameterNodeWrapper", _parameter_node_wrapper()), ("slicer.i18n", _i18n())):
        monkeypatch.setitem(sys.modules, name, module)
        if name.startswith("slicer."):
            monkeypatch.setattr(slicer, name.split(".", 1)[1], module, raising=False)
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # Slicer < 5.12 unless a test adds it
    monkeypatch.setattr(slicer, "app", App(app.app_logic, temporary_path, layout_manager), raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", app.scene, raising=False)
    logics = {"segmentations": app.segmentations_logic, "volumerendering": app.volume_rendering._logic,
              "colors": colors}
    modules = types.SimpleNamespace(sampleDataSources={}, sampleDataUrlRewriteRules={}, **{
        name: types.SimpleNamespace(logic=lambda logic=logic: logic) for name, logic in logics.items()})
    monkeypatch.setattr(slicer, "modules", modules, raising=False)

    # message boxes (util.py: errorDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs))
    def box(kind):
        def show(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
            recorder.messages.append((kind, str(text)))
            return recorder.confirm_answer if kind == "confirm" else None
        return show

    monkeypatch.setattr(slicer.util, "errorDisplay", box("error"))
    monkeypatch.setattr(slicer.util, "warningDisplay", box("warning"))
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", box("confirm"))

    def pip_install(requirements):  # util.py 5.8-5.10: pip_install(requirements); never runs pip here
        recorder.pip_calls.append(("pip_install", requirements))

    monkeypatch.setattr(slicer.util, "pip_install", pip_install)
    monkeypatch.syspath_prepend(str(MODULE_DIR))  # Slicer puts the module's folder on sys.path
    for name in ("SaliencyInspector", "SaliencyInspectorLib", "SaliencyInspectorLib.dependencies"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    os.makedirs(temporary_path, exist_ok=True)
    return recorder
