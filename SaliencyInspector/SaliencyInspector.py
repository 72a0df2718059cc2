"""SaliencyInspector: why did a volumetric CT classifier decide what it decided?

3D Slicer scripted module. It computes HiResCAM / Grad-CAM maps for every class of a CT
classifier, maps them onto the CT's own voxel grid, shows them as heat overlays in the slice
views and volume-rendered in 3D beside the organ segmentation, and scores each map against the
organs (Dice, ROC AUC, AUPRC, IoA, mass in mask, pointing game).

Layout of this file, as in Slicer's scripted-module template: Module, parameter node, Widget,
Logic (usable from the Python console), Test. The Logic is a thin layer over the pure core
(``saliency_inspector``) and the MRML glue (``saliency_inspector.mrml``), which takes the scene
as an argument and is tested on real MRML outside the application.
"""

import logging
import os
import uuid
from enum import Enum
from subprocess import CalledProcessError
from typing import Annotated

import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin
from slicer import (vtkMRMLPlotChartNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode,
                    vtkMRMLTableNode)

from SaliencyInspectorLib import background, dependencies

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS_PATH = os.path.join(MODULE_DIR, "Resources", "requirements.txt")
HOMEPAGE = "https://github.com/saliency-inspector/SlicerSaliencyInspector"
# The core's own floor (pyproject.toml); what pip will install may need a newer torch (computed).
MINIMUM_TORCH = ">=2.2"
# methods with their own check box (and parameter); every other method of the registry
# (saliency_inspector.explainers.registry.METHODS: labels, families, descriptions) is in the list
CHECKBOX_METHODS = ("hirescam", "gradcam")
PHANTOM_SAMPLE_NAME = "SaliencyPhantom"
# the phantom's Sample Data URIs (never fetched from a network) and the files they stand for
PHANTOM_FILES = {"phantom://ct": "SaliencyPhantom-ct.nrrd", "phantom://organs": "SaliencyPhantom-organs.seg.nrrd"}
ROC_PLOT_POINTS = 400  # points per ROC series in the plot chart (the table holds the exact AUC)


#
# Module
#
class SaliencyInspector(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Saliency Inspector")
        # the category under Slicer's own translation context, as the module template does
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["SaliencyInspector contributors"]
        self.parent.helpText = _(
            "Explain a CT classifier: HiResCAM and Grad-CAM maps for every class on the CT's own grid, "
            "shown over the CT and its organ segmentation, and scored against the organs "
            "(Dice, ROC AUC, AUPRC, IoA, mass in mask, pointing game). "
            "Try it with the phantom (Load phantom sample, or Sample Data) and the built-in demo model."
        )
        # the extension's own documentation (getDefaultModuleDocumentationLink() points at Slicer's
        # core-module pages, where this module has none)
        self.parent.helpText += "<p>" + _("See the {start}documentation{end}.").format(
            start=f'<a href="{HOMEPAGE}#in-3d-slicer">', end="</a>") + "</p>"
        self.parent.acknowledgementText = _(
            "Uses PyTorch and MONAI. HiResCAM: Draelos & Carin, arXiv:2011.08891. "
            "Grad-CAM: Selvaraju et al., ICCV 2017."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)
        slicer.app.connect("startupCompleted()", registerCompareLayout)


def registerCompareLayout():
    """Make the compare layout known at startup and after every scene load, so a scene saved in it
    reopens in it (Slicer saves the layout's id with the scene, not its description)."""
    from saliency_inspector import mrml_charts

    def register(caller=None, event=None):
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:  # None without a main window: no layout to restore
            mrml_charts.register_compare_layout(layoutManager.layoutLogic().GetLayoutNode())

    register()
    if slicer.mrmlScene not in _layoutObservedScenes:  # once per scene (slicer.mrmlScene: one per session)
        slicer.mrmlScene.AddObserver(slicer.mrmlScene.EndImportEvent, register)
        _layoutObservedScenes.append(slicer.mrmlScene)


_layoutObservedScenes = []


def methodGroups(methods=None, classifier=None) -> list:
    """The methods offered beside the HiResCAM / Grad-CAM check boxes, grouped by their family in
    the method registry (``saliency_inspector.explainers.registry.METHODS``): ``[(group title,
    [method name, ...]), ...]`` in the registry's FAMILIES order, empty groups left out. A method
    that only some models have (``Method.available``, e.g. ``attention``: models with attention
    gates) is offered only for a ``classifier`` that has it."""
    from saliency_inspector.explainers.registry import FAMILIES, FAMILY_LABELS, METHODS

    methods = METHODS if methods is None else methods

    def offered(info) -> bool:
        available = getattr(info, "available", None)
        return available is None or (classifier is not None and info.available_for(classifier))

    groups = []
    for family in FAMILIES:
        names = [n for n, info in methods.items()
                 if info.family == family and n not in CHECKBOX_METHODS and offered(info)]
        if names:
            groups.append((_(FAMILY_LABELS.get(family, family)), names))
    return groups


def methodLabel(name: str) -> str:
    """The display name of a method (the registry's label; an unknown name as it is)."""
    from saliency_inspector.explainers.registry import method_label

    return method_label(name)


def registerSampleData():
    """Register the synthetic phantom with Sample Data: made locally, nothing downloaded.

    Sample Data's panel calls ``customDownloader``; ``SampleData.downloadSample()`` (the console)
    never does (SampleData.py: downloadSamples -> downloadFromSource, Slicer 5.8 to 5.13) but, from
    Slicer 5.10 on, passes every URI through the registered URL rewrite rules before fetching it:
    :func:`phantomUrlRewriteRule` writes the phantom's files and points there. On Slicer 5.8 use
    ``slicer.util.getModuleLogic("SaliencyInspector").loadPhantomSample()`` from the console.
    """
    import SampleData

    iconsPath = os.path.join(MODULE_DIR, "Resources", "Icons")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="SaliencyInspector",
        sampleName=PHANTOM_SAMPLE_NAME,
        uris=list(PHANTOM_FILES),
        fileNames=list(PHANTOM_FILES.values()),
        nodeNames=["SaliencyPhantom CT", "SaliencyPhantom organs"],
        thumbnailFileName=os.path.join(iconsPath, "SaliencyInspector.png"),
        loadFileTypes=["VolumeFile", "SegmentationFile"],
        customDownloader=loadPhantomFromSampleData,
    )
    if hasattr(SampleData.SampleDataLogic, "registerUrlRewriteRule"):  # Slicer >= 5.10
        SampleData.SampleDataLogic.registerUrlRewriteRule(PHANTOM_SAMPLE_NAME, phantomUrlRewriteRule)


def phantomUrlRewriteRule(url):
    """Sample Data URL rewrite rule: ``phantom://ct`` and ``phantom://organs`` become ``file://``
    URLs of the phantom's files (written once into the temporary folder); other URLs are unchanged."""
    if url not in PHANTOM_FILES:
        return url
    from pathlib import Path

    folder = Path(slicer.app.temporaryPath) / "SaliencyInspector" / "phantom-0"
    path = folder / PHANTOM_FILES[url]
    if not path.is_file():
        SaliencyInspectorLogic().writePhantomFiles(folder)
    return path.as_uri()


def loadPhantomFromSampleData(source=None):
    """Sample Data's button: make the phantom; an error is shown in a message box, not only logged."""
    with slicer.util.tryWithErrorDisplay(_("Failed to make the phantom."), waitCursor=True):
        return list(SaliencyInspectorLogic().loadPhantomSample())


#
# Parameter node: saved with the scene, so a saved scene restores the inspection
#
class Device(Enum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "cuda"

    @staticmethod
    def label(value):
        return {"AUTO": _("auto (GPU when available)"), "CPU": _("CPU"), "GPU": _("GPU (CUDA)")}[value.name]


@parameterNodeWrapper
class SaliencyInspectorParameterNode:
    """Inputs, display settings and the outputs of the last run."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    useDemoModel: bool = True
    modelPath: str = ""
    hirescam: bool = True
    gradcam: bool = True
    moreMethods: str = ""  # the other estimators chosen in the method list, comma-separated names
    className: str = "all"
    targetLayer: str = ""
    device: Device = Device.AUTO
    threshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    shownSaliency: vtkMRMLScalarVolumeNode
    predictionsTable: vtkMRMLTableNode
    metricsTable: vtkMRMLTableNode
    rocChart: vtkMRMLPlotChartNode
    fidelityTable: vtkMRMLTableNode
    fidelityChart: vtkMRMLPlotChartNode
    trustTable: vtkMRMLTableNode
    trustChart: vtkMRMLPlotChartNode


#
# Widget
#
class SaliencyInspectorWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Connects the GUI to the logic; no computation here."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._running = False
        self._task = None  # the background task running now (background.Task) or last
        self._settingResults = False  # Apply is filling in its outputs: no display handler runs

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SaliencyInspector.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SaliencyInspectorLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.fidelityButton.connect("clicked(bool)", self.onFidelityButton)
        self.ui.trustButton.connect("clicked(bool)", self.onTrustButton)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicomButton)  # PACS: maps as DICOM
        self._fillMethodList()
        self.ui.moreMethodsListWidget.connect("itemSelectionChanged()", self.onMoreMethodsChanged)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.classComboBox.connect("currentIndexChanged(int)", self.onClassChanged)
        self.ui.shownSaliencySelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onShownSaliencyChanged)
        # these handlers run before the parameter node wrapper stores the new value: they use the
        # value the signal carries, never the parameter node's (previous) one
        self.ui.thresholdSliderWidget.connect("valueChanged(double)", self.onThresholdChanged)
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.onOpacityChanged)
        # only saliency maps made by this module in the "shown map" selector
        self.ui.shownSaliencySelector.addAttribute("vtkMRMLScalarVolumeNode", "SaliencyInspector.Saliency", "1")
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.hide()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not self._parameterNode.segmentation:
            self._parameterNode.segmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.ui.modelPathLineEdit.currentPath = self._parameterNode.modelPath
            # a loaded scene brings back the last inspection's predictions
            self.ui.predictionsTableView.setMRMLTableNode(self._parameterNode.predictionsTable)
            self._selectMoreMethods(self._parameterNode.moreMethods)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(p and p.inputVolume and self._chosenMethods() and (p.useDemoModel or p.modelPath))
        self.ui.applyButton.enabled = ready and not self._running
        if not p or not p.inputVolume:
            self.ui.applyButton.toolTip = _("Select a CT volume")
        elif not self._chosenMethods():
            self.ui.applyButton.toolTip = _("Select at least one method")
        elif not (p.useDemoModel or p.modelPath):
            self.ui.applyButton.toolTip = _("Choose a model file or use the demo model")
        else:
            self.ui.applyButton.toolTip = _("Compute saliency maps, score them and show them")
        self.ui.modelPathLineEdit.enabled = bool(p) and not p.useDemoModel

    def _chosenMethods(self) -> list:
        """The methods Apply explains: the checked CAMs, then those chosen in the method list."""
        p = self._parameterNode
        if not p:
            return []
        checked = [m for m, on in (("hirescam", p.hirescam), ("gradcam", p.gradcam)) if on]
        return checked + [m for m in (p.moreMethods or "").split(",") if m and m not in checked]

    # ---- the method list (estimators from the registry, grouped by family) ------------------
    def _fillMethodList(self, classifier=None) -> None:
        from saliency_inspector.explainers.registry import METHODS

        listWidget = self.ui.moreMethodsListWidget
        listWidget.clear()
        for title, names in methodGroups(classifier=classifier):
            header = qt.QListWidgetItem(title)
            header.setFlags(qt.Qt.NoItemFlags)  # a group title, not a choice
            listWidget.addItem(header)
            for name in names:
                item = qt.QListWidgetItem("    " + METHODS[name].label)
                item.setData(qt.Qt.UserRole, name)
                item.setToolTip(f"{METHODS[name].description} (cost: {METHODS[name].cost})")
                listWidget.addItem(item)

    def _selectMoreMethods(self, names) -> None:
        """Select the list's items of ``names`` (comma-separated), e.g. from a loaded scene."""
        chosen = set((names or "").split(","))
        listWidget = self.ui.moreMethodsListWidget
        wasBlocked = listWidget.blockSignals(True)
        for row in range(listWidget.count):
            item = listWidget.item(row)
            item.setSelected(item.data(qt.Qt.UserRole) in chosen)
        listWidget.blockSignals(wasBlocked)

    def onMoreMethodsChanged(self) -> None:
        if self._parameterNode:
            self._parameterNode.moreMethods = ",".join(
                item.data(qt.Qt.UserRole) for item in self.ui.moreMethodsListWidget.selectedItems())

    # ---- actions -------------------------------------------------------------------------
    def onModelPathChanged(self, path) -> None:
        if self._parameterNode:
            self._parameterNode.modelPath = path
        self._methodsForModel(path)

    def _methodsForModel(self, path) -> None:
        """Offer the methods of the chosen model file too (e.g. ``attention`` for a model with
        attention gates): the model is loaded on the CPU (cached); one that fails to load offers
        only the methods every model has (Apply then says why it failed)."""
        classifier = None
        if path and os.path.exists(str(path)):
            try:
                classifier = self.logic.loadClassifier(str(path), "cpu")
            except Exception as err:  # noqa: BLE001 - the list must not break on a bad file
                logging.info(f"model {path}: not loaded for the method list ({err})")
        self._fillMethodList(classifier)
        if self._parameterNode:
            self._selectMoreMethods(self._parameterNode.moreMethods)

    def onClassChanged(self, index) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.className = self.ui.classComboBox.itemData(index) or "all"

    def onLoadSample(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to make the phantom."), waitCursor=True):
            ct, organs = self.logic.loadPhantomSample()
            self._parameterNode.inputVolume = ct
            self._parameterNode.segmentation = organs

    def onCancelButton(self) -> None:
        self.logic.cancelRequested = True
        if self._task is not None:
            self._task.cancel()  # the worker stops at its next forward pass or step
        self.ui.statusLabel.text = _("Cancelling…")

    # ---- long work: a worker thread (no MRML), polled by a QTimer; nodes made on this thread ------
    def _startTask(self, title, compute, finish, before=None) -> None:
        """``compute(report)`` in a worker thread, then ``finish(result)`` (a generator: one short
        step per timer tick) on the main thread. One task at a time; Cancel stops it."""
        self._running = True
        for button in (self.ui.applyButton, self.ui.fidelityButton, self.ui.trustButton, self.ui.compareButton):
            button.enabled = False
        self.ui.cancelButton.enabled = True
        self.ui.progressBar.setRange(0, 0)  # busy indicator; the steps are reported in the label
        self.ui.progressBar.show()
        self.ui.statusLabel.text = title
        self._task = background.Task(compute, qt.QTimer, onProgress=self._showProgress,
                                     onDone=lambda result: self._finishSteps(finish, result),
                                     onError=self._taskFailed, onCancelled=self._taskCancelled, before=before)
        self._task.start()

    def _busy(self) -> bool:
        """A task runs, or a cancelled one's worker has not stopped yet (it holds the model): say so."""
        if self._running or (self._task is not None and self._task.workerAlive):
            self.ui.statusLabel.text = _("Still stopping the previous run; try again in a moment.")
            return True
        return False

    def _finishSteps(self, finish, result):
        try:
            steps = finish(result)
            if steps is not None and hasattr(steps, "__next__"):
                yield from steps
        finally:
            self._endTask()

    def _taskFailed(self, err) -> None:
        self._endTask()
        message = str(err) if isinstance(err, InputErrorTypes()) else f"{type(err).__name__}: {err}"
        logging.error(f"SaliencyInspector: {message}")
        self.ui.statusLabel.text = _("Failed: {message}").format(message=message)
        slicer.util.errorDisplay(_("Saliency Inspector failed: {message}").format(message=message),
                                 windowTitle=_("Saliency Inspector"))

    def _taskCancelled(self) -> None:
        self._endTask()
        self.ui.statusLabel.text = _("Cancelled; the scene is unchanged.")

    def _endTask(self) -> None:
        self._running = False
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.hide()
        for button in (self.ui.fidelityButton, self.ui.trustButton, self.ui.compareButton):
            button.enabled = True
        self._checkCanApply()

    def onApplyButton(self) -> None:
        p = self._parameterNode
        if self._busy():
            return
        # before anything touches torch or monai; a refusal or failure was already shown once
        if not self.logic.ensureDependencies(askConfirmation=True):
            self.ui.statusLabel.text = _("Not run: the required Python packages are not installed.")
            return
        methods = self._chosenMethods()
        volume, segmentation, threshold, opacity = p.inputVolume, p.segmentation, p.threshold, p.opacity
        with slicer.util.tryWithErrorDisplay(_("Saliency computation failed."), waitCursor=True):
            self.logic.checkApplyInputs(volume, segmentation)  # one clear line before anything starts
            self.logic.cancelRequested = False
            model, classes, layer, device = self._model(), p.className or "all", p.targetLayer or None, p.device.value
            prepared = {}

            def read():  # MRML is read on the main thread, one piece per timer tick
                yield from self.logic.readApplyInputs(volume, segmentation, prepared)

            def compute(report):
                return self.logic.computeApply(prepared, model, methods, classes, layer, device, say=report)

            def finish(computed):
                result = yield from self.logic.finishApply(volume, prepared, computed, segmentation, threshold, opacity)
                self._showResults(result)

            self._startTask(_("Computing saliency…"), compute, finish, before=read())

    def _showResults(self, result) -> None:
        """Store Apply's outputs in the parameter node. The logic has already shown them (compare
        layout); setting shownSaliency must not re-show one map in every view."""
        p = self._parameterNode
        self._settingResults = True
        try:
            p.predictionsTable = result["predictions"]
            p.metricsTable = result.get("metrics")
            p.rocChart = result.get("roc")
            p.shownSaliency = result["shown"]
        finally:
            self._settingResults = False
        self._fillClassComboBox(result["classNames"])
        self.ui.predictionsTableView.setMRMLTableNode(result["predictions"])
        self.ui.statusLabel.text = result["message"]

    def _showProgress(self, message) -> None:
        self.ui.statusLabel.text = message  # called by the task's timer, on the main thread

    def _fillClassComboBox(self, classNames) -> None:
        wasBlocked = self.ui.classComboBox.blockSignals(True)
        self.ui.classComboBox.clear()
        self.ui.classComboBox.addItem(_("all classes"), "all")
        for name in classNames:
            self.ui.classComboBox.addItem(name, name)
        index = self.ui.classComboBox.findData(self._parameterNode.className)
        self.ui.classComboBox.currentIndex = max(index, 0)
        self.ui.classComboBox.blockSignals(wasBlocked)

    def onShownSaliencyChanged(self, node) -> None:
        """The user picked another map: show it over the CT in every slice view and in 3D."""
        p = self._parameterNode
        if self._settingResults or node is None or not p or not p.inputVolume:
            return
        self.logic.showSaliency(p.inputVolume, node, p.threshold, p.opacity)

    def onThresholdChanged(self, value) -> None:
        if not self._settingResults and self._parameterNode:
            self.logic.updateShownMaps(threshold=value)

    def onOpacityChanged(self, value) -> None:
        if not self._settingResults and self._parameterNode:
            self.logic.updateShownMaps(opacity=value)

    def onCompareButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot show the comparison."), waitCursor=True):
            self.logic.showComparison(p.inputVolume, p.shownSaliency, p.threshold, p.opacity,
                                      p.metricsTable, p.rocChart)

    def _model(self) -> str:
        p = self._parameterNode
        return "demo" if p.useDemoModel else p.modelPath

    def _requireShownMap(self) -> None:
        from saliency_inspector.errors import InputError

        p = self._parameterNode
        if not p or not p.inputVolume or not p.shownSaliency:
            raise InputError("no map is shown yet; compute the saliency maps with Apply first")

    def onFidelityButton(self) -> None:
        """Deletion/insertion curves of the shown map (plot view) and F (table view), computed in the
        worker thread."""
        from saliency_inspector import mrml

        p = self._parameterNode
        if self._busy():
            return
        with slicer.util.tryWithErrorDisplay(_("Cannot measure the fidelity of the shown map."), waitCursor=True):
            self._requireShownMap()
            if not self.logic.ensureDependencies(askConfirmation=True):
                return
            shown, model, device = p.shownSaliency, self._model(), p.device.value
            ct, read = mrml.volume_from_node(p.inputVolume), self.logic.readMap(shown, p.inputVolume)
            className = shown.GetAttribute("SaliencyInspector.Class")
            self.logic.cancelRequested = False

            def compute(report):
                return self.logic.computeFidelity(ct, self.logic.onCtGrid(read), className, model, device, say=report,
                                                  importance=_importanceOf(shown))

            def finish(result):
                tableNode, chartNode, result = self.logic.addFidelityNodes(shown, result)
                self._showTableAndChart("fidelity", tableNode, chartNode)
                self.ui.statusLabel.text = _("Fidelity of {map}: F = {F:.3f}").format(map=shown.GetName(),
                                                                                      F=result.curves.F)

            self._startTask(_("Measuring fidelity…"), compute, finish)

    def onTrustButton(self) -> None:
        """The trust card of the shown map (table view) and its randomization curves (plot view),
        computed in the worker thread."""
        from saliency_inspector import mrml

        p = self._parameterNode
        if self._busy():
            return
        with slicer.util.tryWithErrorDisplay(_("Cannot make the trust card of the shown map."), waitCursor=True):
            self._requireShownMap()
            if not self.logic.ensureDependencies(askConfirmation=True):
                return
            shown, model, device = p.shownSaliency, self._model(), p.device.value
            method, className = self.logic.mapMethodAndClass(shown)
            ct = mrml.volume_from_node(p.inputVolume)
            segments = None
            if p.segmentation is not None:
                segments = mrml.segments_from_node(p.segmentation, p.inputVolume, slicer.modules.segmentations.logic())
            self.logic.cancelRequested = False

            def compute(report):
                return self.logic.computeTrust(ct, method, className, model, segments=segments, device=device,
                                               say=report)

            def finish(card):
                tableNode, chartNode, _card = self.logic.addTrustNodes(shown, card)
                self._showTableAndChart("trust", tableNode, chartNode)
                self.ui.statusLabel.text = _("Trust card of {map}: see the table and the randomization plot.").format(
                    map=shown.GetName())

            self._startTask(_("Making the trust card…"), compute, finish)

    def _showTableAndChart(self, kind, tableNode, chartNode) -> None:
        from saliency_inspector import mrml_charts

        p = self._parameterNode
        setattr(p, f"{kind}Table", tableNode)
        setattr(p, f"{kind}Chart", chartNode)
        mrml_charts.show_table_and_chart(slicer.app.applicationLogic(), tableNode, chartNode)

    def onExportDicomButton(self) -> None:
        """The input CT's maps (and segmentation) as DICOM into Slicer's DICOM database (a folder under
        the application's temporary path)."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot export the maps as DICOM."), waitCursor=True):
            folder = os.path.join(slicer.app.temporaryPath, "SaliencyInspector-DICOM", uuid.uuid4().hex)
            paths = self.logic.exportDicom(p.inputVolume, folder, segmentationNode=p.segmentation)
            self.ui.statusLabel.text = _("Exported {count} DICOM objects to {folder}.").format(count=len(paths),
                                                                                           folder=folder)


def InputErrorTypes() -> tuple:
    """The exception types whose message is already one clear line for the user."""
    from saliency_inspector.errors import InputError

    return (InputError,)


#
# Logic
#
CancelledError = background.Cancelled  # the user pressed Cancel


class DependencyError(RuntimeError):
    """A required Python package is missing and was not installed (declined, failed, or too old)."""


def _importanceOf(saliencyNode):
    """The importance transform of a saliency node's method (Method.importance: relu, abs or
    signed); ReLU(map) for a node that does not say its method."""
    from saliency_inspector.explainers.registry import METHODS

    method = METHODS.get(saliencyNode.GetAttribute("SaliencyInspector.Method") or "")
    return method.importance if method is not None else "relu"


class SaliencyInspectorLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, callable from Slicer's Python console:

    >>> logic = slicer.util.getModuleLogic("SaliencyInspector")
    >>> ct, organs = logic.loadPhantomSample()                 # (volume node, segmentation node)
    >>> nodes, explanation, predictions = logic.explain(ct)   # {(method, class): saliency node}, ...
    >>> table, rocChart, evaluation = logic.evaluate(nodes[("hirescam", "liver")], organs, ct)
    >>> logic.show(ct, nodes[("hirescam", "liver")], organs)

    Without a main window (``slicer.app.layoutManager()`` is None: ``--no-main-window``, batch)
    every method works and leaves the layout alone.
    """

    _classifierCache = {}  # (model, device) -> Classifier: switching class or method does not reload
    _dependenciesReady = False  # set once ensureDependencies() has succeeded in this session

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.cancelRequested = False
        self.lastDevice = None  # the device the last explain() ran on (after any CPU fallback)
        self._onGridReady = {}  # node ID -> its map put on the CT grid by Apply's worker: used once

    def getParameterNode(self):
        return SaliencyInspectorParameterNode(super().getParameterNode())

    # ---- dependencies --------------------------------------------------------------------
    def ensureDependencies(self, askConfirmation=True) -> bool:
        """Install what the module needs that Slicer lacks, after asking; True when all is there.

        torch comes from the PyTorch extension (PyTorchUtils), at a version every package pip
        will install accepts; the rest (Resources/requirements.txt) with pip, constrained to the
        installed torch, numpy, SimpleITK and vtk so pip never replaces them. Declined, failed or
        too old: one message box, one log line, False. Nothing is installed at import time.
        """
        if SaliencyInspectorLogic._dependenciesReady:
            return True
        try:
            self._installDependencies(askConfirmation)
        except DependencyError as err:
            logging.warning(f"SaliencyInspector: {err}")
            slicer.util.warningDisplay(str(err), windowTitle=_("Saliency Inspector"))
            return False
        except Exception as err:  # noqa: BLE001  pip or light-the-torch failed (CalledProcessError), no PythonSlicer, ...
            message = _("Installing the Python packages SaliencyInspector needs failed ({error}). "
                        "Check the internet connection and the Python console's log, then try again."
                        ).format(error=err)
            logging.error(f"SaliencyInspector: {message}")
            if not getattr(err, "shownBySlicer", False):
                slicer.util.errorDisplay(message, windowTitle=_("Saliency Inspector"))
            return False
        SaliencyInspectorLogic._dependenciesReady = True
        return True

    def dependenciesInstalled(self) -> bool:
        """True when torch and every requirement are installed (checked without importing them)."""
        return (dependencies.installed_version("torch") is not None
                and not dependencies.missing_requirements(dependencies.load_requirements(REQUIREMENTS_PATH)))

    def _installDependencies(self, askConfirmation) -> None:
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise DependencyError(_("This module needs the PyTorch extension. Install it from the Extensions "
                                    "Manager, restart Slicer, then try again.")) from None
        requirements = dependencies.load_requirements(REQUIREMENTS_PATH)
        missing = dependencies.missing_requirements(requirements)  # read from the installed metadata: offline
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        torchMissing = not torchLogic.torchInstalled()
        if not torchMissing:
            installed = dependencies.installed_version("torch")
            if installed is not None and not dependencies.accepts(MINIMUM_TORCH, installed):
                raise DependencyError(_(
                    "PyTorch {installed} is installed, but this module needs torch{required}. Open the PyTorch "
                    "Utils module, uninstall PyTorch, restart Slicer and install it with the version requirement "
                    "{required}.").format(installed=installed, required=MINIMUM_TORCH))
        if not torchMissing and not missing:
            return
        # ONE question, listing everything, before anything touches the network (pip's dry run
        # included); PyTorchUtils and slicer.packaging are then told not to ask again
        listing = ([_("PyTorch (torch{required}, through the PyTorch extension)").format(required=MINIMUM_TORCH)]
                   if torchMissing else []) + [str(r) for r in missing]
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("SaliencyInspector needs these Python packages, which are not installed: {packages}. "
                  "Download and install them now?").format(packages=", ".join(listing)),
                windowTitle=_("Saliency Inspector")):
            raise DependencyError(_("The required Python packages were not installed; nothing was computed."))
        if torchMissing:
            # the strictest torch requirement of what pip is going to install, and ours
            torchRequirement = str(self._torchRequirement(requirements))
            logging.info(f"SaliencyInspector: installing torch{torchRequirement} with PyTorchUtils")
            if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=torchRequirement) is None:
                raise DependencyError(_("PyTorch was not installed, so no saliency maps can be computed."))
        if not missing:
            return
        constraints = dependencies.write_constraints(os.path.join(slicer.app.temporaryPath, "SaliencyInspector"))
        logging.info(f"SaliencyInspector: installing {', '.join(map(str, missing))} with pip, constrained by "
                     f"{constraints.read_text().split()}")
        packaging = _slicerPackaging()
        if packaging is not None:  # Slicer >= 5.12: shows progress, offers a restart
            try:
                packaging.pip_ensure(missing, constraints=str(constraints), prompt_install=False,
                                     requester="SaliencyInspector")
            except RuntimeError as err:  # pip_ensure raises RuntimeError when the user declines
                raise DependencyError(_("The required Python packages were not installed; nothing was computed.")) from err
            except CalledProcessError as err:
                # slicer.packaging.pip_install has shown "Package installation failed" with pip's log
                # (its progress dialog is skipped in testing mode)
                err.shownBySlicer = not slicer.app.testingEnabled()
                raise
        else:  # Slicer 5.8 - 5.11: slicer.util.pip_install(list of pip arguments)
            slicer.util.pip_install(["--constraint", str(constraints), *map(str, missing)])
        still = dependencies.missing_requirements(requirements)
        if still:
            raise DependencyError(_("These Python packages are still missing after the installation: {packages}. "
                                    "Restart Slicer and try again.").format(packages=", ".join(map(str, still))))

    def _torchRequirement(self, requirements):
        """torch versions accepted by MINIMUM_TORCH and by everything pip would install for
        ``requirements`` (resolved by ``pip install --dry-run --report``; nothing is installed)."""
        import json
        import tempfile

        with tempfile.TemporaryDirectory(dir=slicer.app.temporaryPath) as folder:
            report = os.path.join(folder, "report.json")
            self._runPip(dependencies.dry_run_arguments(requirements, report))
            with open(report) as f:
                return dependencies.torch_requirement(json.load(f), MINIMUM_TORCH)

    @staticmethod
    def _runPip(arguments) -> None:
        """``PythonSlicer -m pip <arguments>``; CalledProcessError on failure."""
        # executePythonModule since Slicer 5.11; the older name still works there but warns
        run = getattr(slicer.util, "executePythonModule", None) or slicer.util._executePythonModule
        run("pip", arguments)

    def _requireDependencies(self) -> None:
        """For the console entry points: install on first use (asking), or one clear error."""
        if not self.ensureDependencies(askConfirmation=True):
            from saliency_inspector.errors import InputError

            raise InputError("the Python packages SaliencyInspector needs are not installed (see the message "
                             "shown); press Apply once, or call logic.ensureDependencies(), to install them")

    # ---- the steps -----------------------------------------------------------------------
    def loadClassifier(self, model="demo", device="auto", progress=None):
        """The classifier for ``model`` ("demo" or a file/folder path), cached between runs.

        A model that fails to load raises InputError with the reason. ``device="auto"`` uses
        the GPU when there is one.
        """
        from saliency_inspector.errors import InputError
        from saliency_inspector.models.demo_model import demo_classifier
        from saliency_inspector.models.loaders import load_classifier

        key = (str(model), str(device))
        if key not in self._classifierCache:
            say = progress or logging.info
            say(_("Loading model {model}…").format(model=model))
            try:
                classifier = demo_classifier(device) if model == "demo" else load_classifier(model, device=device)
            except InputError:
                raise
            except ModuleNotFoundError as err:  # a missing package is not the model's fault
                raise InputError(f"the Python package '{err.name}' is not installed; press Apply once (or call "
                                 "logic.ensureDependencies()) to install what the module needs") from err
            except Exception as err:  # anything else from a foreign model file: one clear message
                raise InputError(f"{model}: the model could not be loaded ({type(err).__name__}: {err}); "
                                 "check the file and its model card") from err
            self._classifierCache[key] = classifier
        return self._classifierCache[key]

    def explain(self, volumeNode, model="demo", methods=("hirescam", "gradcam"), classes="all",
                layer=None, device="auto", progress=None):
        """Saliency volume nodes {(method, class): node} on the CT node's grid, plus predictions.

        Returns ``(nodes, explanation, predictionsTableNode)``: a dict keyed by (method, class
        name), the core ``Explanation`` and a table node. The maps of one call share a run id
        (node attribute ``SaliencyInspector.Run``, unique across saved and reloaded scenes). A
        CUDA out-of-memory error falls back to the CPU and says so through ``progress`` and the log.
        """
        from saliency_inspector import mrml

        self.cancelRequested = False  # a cancel of an earlier run does not stop this one
        ct = mrml.volume_from_node(volumeNode)  # InputError for no / non-scalar / 2D volumes
        self._requireDependencies()
        explanation = self.computeExplanation(ct, model, methods, classes, layer, device, self._progress(progress))
        return self.addSaliencyNodes(volumeNode, ct, explanation, self._progress(progress))

    def computeExplanation(self, ct, model="demo", methods=("hirescam", "gradcam"), classes="all", layer=None,
                           device="auto", say=None):
        """The core ``Explanation`` of the CT (a core Volume): no MRML, so it may run in a worker
        thread. ``say(message)`` reports progress and may raise to cancel (also checked before every
        forward pass of the model). A CUDA out-of-memory error falls back to the CPU and says so."""
        from saliency_inspector.explainers.explanation import explain

        say = say or logging.info
        classifier = self.loadClassifier(model, device, say)
        try:
            with background.cancelOnForward(classifier.module, lambda: say("")):
                explanation = explain(classifier, ct, methods=methods, classes=classes, layer=layer, progress=say)
        except Exception as err:
            if not _isCudaOutOfMemory(err):
                raise
            message = _("The GPU ran out of memory; computing on the CPU instead (slower).")
            logging.warning(message)
            say(message)
            _emptyCudaCache()
            classifier = self.loadClassifier(model, "cpu", say)
            with background.cancelOnForward(classifier.module, lambda: say("")):
                explanation = explain(classifier, ct, methods=methods, classes=classes, layer=layer, progress=say)
        self.lastDevice = str(classifier.device)
        return explanation

    def addSaliencyNodes(self, volumeNode, ct, explanation, say=None):
        """Main thread: one saliency node per (method, class) on the CT node's grid and the
        predictions table; returns ``(nodes, explanation, predictionsTableNode)``."""
        for _made in self._addSaliencyNodes(volumeNode, ct, explanation, say or logging.info):
            pass
        return self._lastNodes

    def _addSaliencyNodes(self, volumeNode, ct, explanation, say):
        """Generator form of :meth:`addSaliencyNodes`: yields after each node; the result is left in
        ``self._lastNodes``. Each (method, class) node holds the RAW map on its own small grid
        (``saliency_inspector.mrml_maps``); its CT-grid map is made only when it is shown."""
        from saliency_inspector import mrml_charts, mrml_maps

        say(_("Creating saliency volumes…"))
        scene = slicer.mrmlScene
        nodes = {}
        # a uuid, not scene.GenerateUniqueName: its counter is not saved with the scene, so a run
        # after save and reload would get the id of an old run
        run = uuid.uuid4().hex
        for (method, className), raw in explanation.raw.items():
            name = scene.GenerateUniqueName(f"{volumeNode.GetName()} {methodLabel(method)} {className}")
            nodes[(method, className)] = mrml_maps.add_raw_map_node(
                scene, raw, volumeNode, name,
                {"SaliencyInspector.Method": method, "SaliencyInspector.Class": className, "SaliencyInspector.Run": run})
            yield (method, className)
        predictions = mrml_charts.add_predictions_table(
            scene, explanation.class_names, explanation.probabilities, explanation.logits,
            name=scene.GenerateUniqueName(f"{volumeNode.GetName()} predictions"))
        self._lastNodes = (nodes, explanation, predictions)

    def readMap(self, saliencyNode, volumeNode=None):
        """Main thread, small: what :meth:`onCtGrid` needs to put a map on the CT grid in any thread:
        ``(raw map, CT grid)`` for a map made by this module, ``(CT-grid map, None)`` for any other."""
        from saliency_inspector import mrml, mrml_maps

        saliency = mrml.volume_from_node(saliencyNode, what="saliency map")
        if not mrml_maps.is_raw_map(saliencyNode):
            return saliency, None
        ctNode = volumeNode or mrml_maps.ct_node_of(saliencyNode)
        mrml.volume_from_node(ctNode)  # one clear line for a missing or broken CT
        return saliency, mrml_maps.grid_of(ctNode)

    @staticmethod
    def onCtGrid(read):
        """The map of :meth:`readMap` on the CT grid (a core Volume; no MRML, any thread)."""
        from saliency_inspector.models.preprocess import resample_map

        saliency, grid = read
        return saliency if grid is None else resample_map(saliency, grid)

    def mapOnCtGrid(self, saliencyNode, volumeNode=None):
        """The saliency node's map on the CT grid, as a core Volume (made now; no node is added)."""
        return self.onCtGrid(self.readMap(saliencyNode, volumeNode))

    def shownNode(self, slot, volumeNode, saliencyNode, threshold=0.2):
        """The node that shows ``saliencyNode`` over ``volumeNode`` in view slot ``slot`` ("Red",
        "Yellow"): the slot's one shared CT-grid node, refilled with this map (window 0 .. max of
        S⁺), for a raw map; the node itself for a map already on the CT grid."""
        from saliency_inspector import mrml, mrml_maps
        from saliency_inspector.models.preprocess import resample_map

        saliencyNode = mrml_maps.source_of(saliencyNode) or saliencyNode  # a slot node: the map it shows
        if not mrml_maps.is_raw_map(saliencyNode):
            return saliencyNode
        raw, grid = self.readMap(saliencyNode, volumeNode)
        window = []

        def fill(out):
            ready = self._onGridReady.pop(saliencyNode.GetID(), None)  # put on the grid by the worker
            if ready is not None and ready.shape == out.shape:
                out[...] = ready.array
            else:
                resample_map(raw, grid, out=out)
            high = float(out.max())  # mrml.display_window's 0 .. max of S⁺, without its float64 copy
            window.append((0.0, high if high > 0 else 1.0))

        node = mrml_maps.show_in_slot(slicer.mrmlScene, slot, saliencyNode, volumeNode, grid.ijk_to_ras(),
                                      grid.shape, fill)
        mrml.set_saliency_display(node, window[0], threshold=threshold)
        return node

    def evaluate(self, saliencyNode, segmentationNode, volumeNode=None, rocChart=True):
        """Score a saliency node against the segments.

        Returns ``(tableNode, chartNode, evaluation)``: a metrics table node (one row per
        segment), an ROC plot chart node (None when ``rocChart`` is False) and the core
        ``EvaluationTable``.
        """
        from saliency_inspector import mrml, mrml_maps

        saliency = self.mapOnCtGrid(saliencyNode, volumeNode)
        ct = mrml.volume_from_node(volumeNode) if volumeNode is not None else None
        mrml.check_segmentation(segmentationNode)
        referenceNode = volumeNode or mrml_maps.ct_node_of(saliencyNode) or saliencyNode
        segments = mrml.segments_from_node(segmentationNode, referenceNode, slicer.modules.segmentations.logic())
        scores = self.scoreMap(saliency, segments, ct, rocChart, _importanceOf(saliencyNode))
        return self.addEvaluationNodes(saliencyNode, scores)

    def scoreMap(self, saliency, segments, ct=None, rocChart=True, importance="relu") -> dict:
        """The metrics of a map (core Volumes and Segments; no MRML, any thread): ``{"table":
        EvaluationTable, "curves": {segment: (fpr, tpr)} or None, "colors": segment colours}``;
        voxels ranked by ``importance`` (the map's method's transform: relu, abs or signed)."""
        from saliency_inspector.scoring import evaluation
        from saliency_inspector.scoring.curves import roc_curve, thin_curve

        table = evaluation.evaluate(saliency, segments, region="auto", ct=ct, importance=importance)
        curves = None
        if rocChart:
            region = _evaluationRegion(table, segments, ct, saliency)
            curves = {}
            for name in segments.names:
                if name.lower() == "body" or not segments.mask(name).any():
                    continue
                fpr, tpr, _thresholds = roc_curve(saliency, segments.mask(name), region, importance)
                curves[name] = thin_curve(fpr, tpr, points=ROC_PLOT_POINTS)
        return {"table": table, "curves": curves, "colors": segments.colors}

    def addEvaluationNodes(self, saliencyNode, scores):
        """Main thread: the metrics table node and the ROC chart node (None without curves) of
        :meth:`scoreMap`'s result; returns ``(tableNode, chartNode, EvaluationTable)``."""
        from saliency_inspector import mrml_charts
        from saliency_inspector.scoring import metrics

        scene = slicer.mrmlScene
        table = scores["table"]
        tableNode = mrml_charts.add_metrics_table(scene, table.rows,
                                           name=scene.GenerateUniqueName(f"{saliencyNode.GetName()} metrics"),
                                           metrics_info=metrics.METRICS)
        chartNode = None
        if scores["curves"] is not None:
            chartNode = mrml_charts.add_roc_chart(scene, scores["curves"], colors=scores["colors"],
                                           name=scene.GenerateUniqueName(f"{saliencyNode.GetName()} ROC"))
        return tableNode, chartNode, table

    def fidelity(self, volumeNode, saliencyNode, model="demo", className=None, device="auto", steps=20,
                 replacement="blur"):
        """Does the model need what the map shows? Deletion (MIF) and LIF curves of ``saliencyNode``
        for its class (``className`` overrides) on the model-input grid, with a random map's as the
        chance line: a table node (F = AUC_LIF - AUC_MIF, AUCs) and a plot chart node.

        Returns ``(tableNode, chartNode, FidelityResult)``. The pipeline is ``compare``'s
        (:func:`saliency_inspector.workflows.fidelity.map_fidelity`).
        """
        from saliency_inspector import mrml

        self.cancelRequested = False
        className = className or saliencyNode.GetAttribute("SaliencyInspector.Class")
        result = self.computeFidelity(mrml.volume_from_node(volumeNode), self.mapOnCtGrid(saliencyNode, volumeNode),
                                      className,
                                      model, device, steps, replacement, self._progress(None),
                                      importance=_importanceOf(saliencyNode))
        return self.addFidelityNodes(saliencyNode, result)

    def computeFidelity(self, ct, saliency, className, model="demo", device="auto", steps=20, replacement="blur",
                        say=None, importance="relu"):
        """:func:`map_fidelity` on core Volumes (no MRML, any thread); progress and cancel through
        ``say`` before every forward pass (2 curves x 2 maps x ``steps`` passes)."""
        from saliency_inspector.workflows.fidelity import map_fidelity

        say = say or logging.info
        classifier = self.loadClassifier(model, device, say)
        total = 4 * steps

        def check():
            say(_("Fidelity: forward pass {k} of about {n}…").format(k=hook.forwards, n=total))

        with background.cancelOnForward(classifier.module, check) as hook:
            return map_fidelity(classifier, ct, saliency, className, steps=steps, replacement=replacement,
                                importance=importance)

    def addFidelityNodes(self, saliencyNode, result):
        """Main thread: the fidelity table and chart nodes; returns ``(tableNode, chartNode, result)``."""
        from saliency_inspector import mrml_charts

        scene = slicer.mrmlScene
        tableNode, chartNode = mrml_charts.add_fidelity_nodes(
            scene, result, name=scene.GenerateUniqueName(f"{saliencyNode.GetName()} fidelity"))
        return tableNode, chartNode, result

    def trust(self, volumeNode, saliencyNode, model="demo", secondModel=None, segmentationNode=None,
              fixationsPath=None, device="auto", progress=None):
        """The trust card of the shown map's method and class (randomization, repeatability with
        ``secondModel``, localization with ``segmentationNode``, gaze with ``fixationsPath``).

        Returns ``(tableNode, chartNode, TrustCard)``: the card in a table node, the randomization
        curves in a plot chart node.
        """
        from saliency_inspector import mrml

        self.cancelRequested = False  # a cancelled Apply does not stop the trust card
        method, className = self.mapMethodAndClass(saliencyNode)
        ct = mrml.volume_from_node(volumeNode)
        self._requireDependencies()
        segments = None
        if segmentationNode is not None:
            segments = mrml.segments_from_node(segmentationNode, volumeNode, slicer.modules.segmentations.logic())
        card = self.computeTrust(ct, method, className, model, secondModel, segments, fixationsPath, device,
                                 self._progress(progress))
        return self.addTrustNodes(saliencyNode, card)

    @staticmethod
    def mapMethodAndClass(saliencyNode):
        """(method, class) of a map made by this module; InputError for any other volume."""
        from saliency_inspector.errors import InputError

        method = saliencyNode.GetAttribute("SaliencyInspector.Method")
        className = saliencyNode.GetAttribute("SaliencyInspector.Class")
        if not method or not className:
            raise InputError(f"{saliencyNode.GetName()}: not a map made by SaliencyInspector (no method/class); "
                             "compute the maps with Apply first")
        return method, className

    def computeTrust(self, ct, method, className, model="demo", secondModel=None, segments=None, fixationsPath=None,
                     device="auto", say=None):
        """The trust card (:func:`run_trust`) on core objects: no MRML, any thread."""
        from saliency_inspector.workflows.trust import run_trust

        say = say or logging.info
        models = [self.loadClassifier(model, device, say)]
        if secondModel:
            models.append(self.loadClassifier(secondModel, device, say))
        with background.cancelOnForward(models[0].module, lambda: say("")):
            return run_trust(ct, models, methods=[method], class_name=className, masks=segments,
                             fixations=fixationsPath, progress=say).card

    def addTrustNodes(self, saliencyNode, card):
        """Main thread: the card in a table node, the randomization curves in a plot chart node."""
        from saliency_inspector import mrml_charts

        scene = slicer.mrmlScene
        tableNode = mrml_charts.add_trust_table(
            scene, card, name=scene.GenerateUniqueName(f"{saliencyNode.GetName()} trust"))
        chartNode = mrml_charts.add_randomization_chart(
            scene, card, name=scene.GenerateUniqueName(f"{saliencyNode.GetName()} randomization"))
        return tableNode, chartNode, card

    def showSaliency(self, volumeNode, saliencyNode, threshold=0.2, opacity=0.5, volumeRendering=True):
        """Heat overlay in every slice view (threshold, opacity, colour legend) and in 3D.

        ``threshold`` and ``opacity`` are fractions, clamped to [0, 1]. A map made by this module is
        shown through the "Red" slot's shared CT-grid node (:meth:`shownNode`), which is returned.
        """
        from saliency_inspector import mrml

        threshold, opacity = _clamp01(threshold), _clamp01(opacity)
        shown = self.shownNode("Red", volumeNode, saliencyNode, threshold)
        mrml.set_saliency_display(shown, _window(shown), threshold=threshold)
        mrml.show_in_slice_views(slicer.mrmlScene, volumeNode, shown, opacity=opacity)
        # the slice views' legend; the 3D views get their own (_showIn3D)
        sliceViews = [n.GetID() for n in slicer.util.getNodesByClass("vtkMRMLSliceNode")]
        mrml.add_color_legend(shown, slicer.modules.colors.logic(), sliceViews)
        if volumeRendering:
            self._showIn3D(shown, threshold)
        return shown

    def _showIn3D(self, saliencyNode, threshold) -> None:
        from saliency_inspector import mrml, mrml_maps

        vrLogic = slicer.modules.volumerendering.logic()
        for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            vrDisplay = vrLogic.GetFirstVolumeRenderingDisplayNode(node)
            # one saliency map in 3D at a time; the user's own volumes are left alone
            if (vrDisplay is not None and node is not saliencyNode
                    and (node.GetAttribute("SaliencyInspector.Saliency") == "1" or mrml_maps.is_slot_node(node))):
                vrDisplay.SetVisibility(False)
        vrDisplay = mrml.setup_volume_rendering(saliencyNode, vrLogic, _window(saliencyNode), threshold=threshold,
                                                method=None)
        threeD = [n.GetID() for n in slicer.util.getNodesByClass("vtkMRMLViewNode")]
        mrml_maps.add_3d_color_legend(saliencyNode, vrDisplay, threeD)

    def updateShownMaps(self, threshold=None, opacity=None) -> int:
        """New threshold and/or opacity for the saliency maps the slice views show now (and their 3D
        rendering); the layout and which map each view shows stay. Returns how many maps changed."""
        from saliency_inspector import mrml

        return mrml.update_shown_saliency(
            slicer.mrmlScene, threshold=None if threshold is None else _clamp01(threshold),
            opacity=None if opacity is None else _clamp01(opacity),
            volume_rendering_logic=slicer.modules.volumerendering.logic())

    def show(self, volumeNode, saliencyNode, segmentationNode=None, threshold=0.2, opacity=0.5):
        """Overlay in the slice views and the map in 3D, beside the segmentation.

        The segmentation's display is left as the user set it (its outline/fill and 3D surfaces
        show as they are); ``segmentationNode`` is checked and shown in the views. Returns the node
        shown on the CT grid (see :meth:`showSaliency`).
        """
        from saliency_inspector import mrml

        mrml.volume_from_node(volumeNode)  # checks before anything in the scene changes
        mrml.volume_from_node(saliencyNode, what="saliency map")
        if segmentationNode is not None:
            mrml.check_segmentation(segmentationNode)
        shown = self.showSaliency(volumeNode, saliencyNode, threshold, opacity)
        if segmentationNode is not None and segmentationNode.GetDisplayNode() is not None:
            segmentationNode.GetDisplayNode().SetVisibility(True)
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:  # None without a main window: nothing to reset
            layoutManager.resetSliceViews()
        return shown

    def showComparison(self, volumeNode, saliencyNode, threshold=0.2, opacity=0.5, tableNode=None, chartNode=None):
        """HiResCAM (red view) beside Grad-CAM (yellow view) for the class of ``saliencyNode``,
        the 3D view, the metrics table and the ROC chart (compare layout, when there is a main window).

        ``saliencyNode`` itself is shown for its own method; the other method's map comes from the
        same run (same ``SaliencyInspector.Run``) and class.
        """
        from saliency_inspector import mrml, mrml_charts, mrml_maps
        from saliency_inspector.errors import InputError

        if volumeNode is None or saliencyNode is None:
            raise InputError("nothing to compare yet; compute the saliency maps first")
        mrml.volume_from_node(volumeNode)
        mrml.volume_from_node(saliencyNode, what="saliency map")
        threshold, opacity = _clamp01(threshold), _clamp01(opacity)
        saliencyNode = mrml_maps.source_of(saliencyNode) or saliencyNode  # a slot node: the map it shows
        pair = mrml.same_run_maps(slicer.mrmlScene, saliencyNode)  # method -> node
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:
            mrml_charts.set_compare_layout(layoutManager.layoutLogic().GetLayoutNode())
            slicer.app.processEvents()  # let the layout create the views (and their composite nodes)
            yellow = layoutManager.sliceWidget("Yellow")
            if yellow is not None:
                yellow.mrmlSliceNode().SetOrientationToAxial()
        scene = slicer.mrmlScene
        for viewName, method in (("Red", "hirescam"), ("Yellow", "gradcam")):
            node = self.shownNode(viewName, volumeNode, pair.get(method, saliencyNode), threshold)
            mrml.set_saliency_display(node, _window(node), threshold=threshold)
            if mrml.show_in_slice_views(scene, volumeNode, node, opacity=opacity, view_names=[viewName]):
                # each map's colour legend in its own view (and the 3D view's map's in 3D)
                sliceNode = scene.GetSingletonNode(viewName, "vtkMRMLSliceNode")
                mrml.add_color_legend(node, slicer.modules.colors.logic(), [sliceNode.GetID()])
                rendered3D = slicer.modules.volumerendering.logic().GetFirstVolumeRenderingDisplayNode(node)
                if rendered3D is not None and rendered3D.GetVisibility():
                    self._showIn3D(node, threshold)  # the slot holds a new map: new colours and 3D legend
        mrml_charts.show_table_and_chart(slicer.app.applicationLogic(), tableNode, chartNode)
        if layoutManager is not None:
            layoutManager.resetSliceViews()

    def process(self, volumeNode, model="demo", methods=("hirescam", "gradcam"), classes="all", layer=None,
                device="auto", segmentationNode=None, threshold=0.2, opacity=0.5, progress=None):
        """The whole job for the widget: explain, predictions table, metrics for the top class, display
        (ending in the compare layout when there is a segmentation and a main window).

        Returns a dict ``{"predictions", "nodes", "shown", "classNames", "metrics", "roc", "message"}``
        ("metrics" and "roc" only with a segmentation), or None when cancelled. Inputs are checked
        before anything is created; the input nodes are never modified; all output nodes are new.
        """
        self.cancelRequested = False  # only a cancel of this run stops it
        prepared = self.prepareApply(volumeNode, segmentationNode)
        try:
            computed = self.computeApply(prepared, model, methods, classes, layer, device, self._progress(progress))
        except CancelledError:
            return None
        steps = self.finishApply(volumeNode, prepared, computed, segmentationNode, threshold, opacity)
        while True:
            try:
                next(steps)
            except StopIteration as end:
                return end.value

    def prepareApply(self, volumeNode, segmentationNode=None) -> dict:
        """Main thread: check the inputs and read them from MRML (the CT, the segments on its grid);
        InputError before anything is created; installs the packages on first use (asking)."""
        self.checkApplyInputs(volumeNode, segmentationNode)
        prepared = {}
        for _piece in self.readApplyInputs(volumeNode, segmentationNode, prepared):
            pass
        return prepared

    def checkApplyInputs(self, volumeNode, segmentationNode=None) -> None:
        """InputError for a missing/unfit CT or segmentation; the packages installed (asking) on first use."""
        from saliency_inspector import mrml

        mrml.volume_from_node(volumeNode)
        if segmentationNode is not None:
            mrml.check_segmentation(segmentationNode)
        self._requireDependencies()

    def readApplyInputs(self, volumeNode, segmentationNode, prepared):
        """Generator, main thread: the CT, then the segments on its grid, into ``prepared``."""
        from saliency_inspector import mrml

        prepared["ct"] = mrml.volume_from_node(volumeNode)
        prepared["segments"] = None
        yield "ct"
        if segmentationNode is not None:
            prepared["segments"] = mrml.segments_from_node(segmentationNode, volumeNode,
                                                           slicer.modules.segmentations.logic())
            yield "segments"

    def computeApply(self, prepared, model="demo", methods=("hirescam", "gradcam"), classes="all", layer=None,
                     device="auto", say=None) -> dict:
        """Any thread, no MRML: the explanation, the most probable explained class and, with segments,
        the metrics and ROC curves of its map (the first method's)."""
        say = say or logging.info
        explanation = self.computeExplanation(prepared["ct"], model, methods, classes, layer, device, say)
        probabilities = dict(zip(explanation.class_names, explanation.probabilities))
        topClass = max(explanation.classes, key=lambda c: probabilities.get(c, 0.0))
        shownKey = (methods[0], topClass) if (methods[0], topClass) in explanation.maps else next(iter(explanation.maps))
        computed = {"explanation": explanation, "topClass": topClass, "probability": probabilities.get(topClass),
                    "shownKey": shownKey, "device": self.lastDevice, "scores": None}
        # the maps Apply shows (the compare pair) go on the CT grid here, not on the GUI thread
        shownKeys = [k for k in ((m, shownKey[1]) for m in ("hirescam", "gradcam")) if k in explanation.raw]
        computed["onGrid"] = {key: explanation.map(*key) for key in [shownKey, *shownKeys]}
        if prepared["segments"] is not None:
            say(_("Scoring the map against the segments…"))
            from saliency_inspector.explainers.registry import get_method

            computed["scores"] = self.scoreMap(computed["onGrid"][shownKey], prepared["segments"], prepared["ct"],
                                               importance=get_method(shownKey[0]).importance)
        return computed

    def finishApply(self, volumeNode, prepared, computed, segmentationNode=None, threshold=0.2, opacity=0.5):
        """Main thread, a generator yielding between short steps (one node each): the saliency
        nodes, the metrics table and ROC chart, the display; returns process()'s result dict."""
        explanation = computed["explanation"]
        yield from self._addSaliencyNodes(volumeNode, prepared["ct"], explanation, logging.info)
        nodes, _explanation, predictions = self._lastNodes
        shown = nodes[computed["shownKey"]]
        self._onGridReady = {nodes[key].GetID(): volume for key, volume in computed.pop("onGrid", {}).items()}
        result = {"predictions": predictions, "nodes": nodes, "shown": shown, "classNames": explanation.class_names}
        if computed["scores"] is not None:
            result["metrics"], result["roc"], _table = self.addEvaluationNodes(shown, computed["scores"])
            yield "metrics"
        self.show(volumeNode, shown, segmentationNode, threshold, opacity)
        yield "shown"
        if "metrics" in result:
            self.showComparison(volumeNode, shown, threshold, opacity, result["metrics"], result["roc"])
        self._onGridReady = {}  # not kept: CT-sized
        p = computed["probability"]
        result["message"] = _("{n} maps; most probable class: {c} ({p:.2f}); device: {d}").format(
            n=len(nodes), c=computed["topClass"], p=float("nan") if p is None else p, d=computed["device"])
        return result

    def loadPhantomSample(self, seed=0, size=(192, 192, 64)):
        """Make the synthetic phantom and put it in the scene; returns (volume node, segmentation node).

        Nothing is downloaded or installed: the phantom needs numpy, scipy and SimpleITK, which
        Slicer ships, and its nodes are made directly (no file, so no slicerio).
        """
        from saliency_inspector import mrml
        from saliency_inspector.models.demo_model import LESION_SCALE
        from saliency_inspector.synth.phantom import make_phantom

        case = make_phantom(seed=seed, size=size, lesion_scale=LESION_SCALE)  # the demo model's lesion size
        scene = slicer.mrmlScene
        ct = mrml.add_volume_node(scene, case.ct, scene.GenerateUniqueName("SaliencyPhantom CT"))
        display = ct.GetDisplayNode()
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
        display.AutoWindowLevelOff()
        display.SetWindowLevel(400, 40)
        organs = mrml.add_segmentation_node(
            scene, {name: case.organs.mask(name) for name in case.organs.names}, ct,
            slicer.modules.segmentations.logic(), case.organs.colors,
            name=scene.GenerateUniqueName("SaliencyPhantom organs"))
        mrml.show_segmentation(organs)  # our own node: outlines in 2D, translucent surfaces in 3D
        mrml.show_in_slice_views(scene, ct)
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:
            layoutManager.resetSliceViews()
        return ct, organs

    def writePhantomFiles(self, folder, seed=0, size=(192, 192, 64)) -> dict:
        """Write the phantom as Sample Data's files (CT .nrrd, organs .seg.nrrd) into ``folder``;
        returns {uri: path}. Written through a private scene with Slicer's own segmentation writer
        (no slicerio); the user's scene is not touched."""
        from pathlib import Path

        from saliency_inspector import mrml
        from saliency_inspector.io.volume import write_volume
        from saliency_inspector.models.demo_model import LESION_SCALE
        from saliency_inspector.synth.phantom import make_phantom

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        case = make_phantom(seed=seed, size=size, lesion_scale=LESION_SCALE)
        paths = {uri: folder / name for uri, name in PHANTOM_FILES.items()}
        write_volume(case.ct, paths["phantom://ct"])
        scene = slicer.vtkMRMLScene()
        ct = mrml.add_volume_node(scene, case.ct, "ct")
        organs = mrml.add_segmentation_node(scene, {name: case.organs.mask(name) for name in case.organs.names}, ct,
                                            slicer.modules.segmentations.logic(), case.organs.colors)
        mrml.write_segmentation_node(organs, paths["phantom://organs"])
        return paths

    def _progress(self, progress):
        def say(message):
            logging.info(message)
            if progress:
                progress(message)
            if self.cancelRequested:
                raise CancelledError("cancelled by the user")
        return say

    def exportDicom(self, volumeNode, outputFolder, segmentationNode=None, importIntoDatabase=True) -> list:
        """The CT node's saliency maps as DICOM Parametric Maps (the top-5 % maps, and
        ``segmentationNode`` if given, as SEG) in ``outputFolder``, referencing the CT's series when it
        was loaded from Slicer's DICOM database; then imported into that database (DICOMLib/DICOMUtils.py
        ``importDicom``) so that the DICOM browser shows them under the study. Returns the paths."""
        from saliency_inspector import mrml_dicom

        database = getattr(slicer, "dicomDatabase", None)
        paths = mrml_dicom.export_dicom(
            slicer.mrmlScene, volumeNode, outputFolder, dicom_database=database, segmentation_node=segmentationNode,
            segmentations_logic=slicer.modules.segmentations.logic() if segmentationNode is not None else None)
        if importIntoDatabase and database is not None and database.isOpen:
            from DICOMLib import DICOMUtils

            DICOMUtils.importDicom(str(outputFolder), database)
        return paths


def _slicerPackaging():
    """``slicer.packaging`` (pip_ensure, Slicer >= 5.12), or None on older Slicer."""
    import importlib

    try:
        # import_module, not `import slicer.packaging`: that would make `slicer` local to the function
        return importlib.import_module("slicer.packaging")
    except ImportError:
        return None


def _clamp01(value) -> float:
    return min(max(float(value), 0.0), 1.0)


def _window(saliencyNode):
    """The display window the map was given when it was made (explain: 0 .. max of S⁺)."""
    display = saliencyNode.GetDisplayNode()
    return display.GetWindowLevelMin(), display.GetWindowLevelMax()


def _isCudaOutOfMemory(err) -> bool:
    try:
        import torch

        if isinstance(err, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return "CUDA out of memory" in str(err)


def _emptyCudaCache() -> None:
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001  (best effort: the CPU fallback does not need it)
        pass


def _evaluationRegion(table, segments, ct, saliency):
    """The region mask the metrics used (body segment, CT body, or None = all) for the ROC curves."""
    from saliency_inspector.scoring.masks import body_mask

    region = str(table.region)
    if region.startswith("body (segment"):
        body = next(n for n in segments.names if n.lower() == "body")
        return segments.mask(body)
    if region.startswith("body") and ct is not None:
        return body_mask(ct, saliency)
    return None


#
# Test (runs inside Slicer: Developer mode, "Reload and Test", or ctest)
#
class SaliencyInspectorTest(ScriptedLoadableModuleTest):
    """Self-test on the phantom: geometry, maps, metrics table, bad input. Skipped, not installing
    anything, when torch or the module's packages are absent."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        # Slicer's "Reload and Test" calls runTest() directly (no unittest runner): a SkipTest raised
        # in here would be reported as a failure, so a missing package is said and the test ends
        self.setUp()
        self.test_bad_input()
        if self._dependenciesMissing():
            self.delayDisplay("Skipped the phantom test: torch or the module's Python packages are not "
                              "installed (press Apply once)")
            return
        self.setUp()
        self.test_phantom_end_to_end()

    def test_bad_input(self):
        import numpy as np

        from saliency_inspector.errors import InputError

        logic = SaliencyInspectorLogic()
        empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
        volume = slicer.util.addVolumeFromArray(np.zeros((8, 8, 8), "int16"), name="zeros")
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        for call in (lambda: logic.process(None),
                     lambda: logic.process(volume, segmentationNode=empty),
                     lambda: logic.show(volume, volume, empty)):
            with self.assertRaises(InputError):
                call()
        if self._dependenciesMissing():
            return
        with self.assertRaises(InputError):
            logic.loadClassifier(os.path.join(slicer.app.temporaryPath, "no-such-model.pt2"), "cpu")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)

    def test_phantom_end_to_end(self):
        import numpy as np

        from saliency_inspector import mrml, mrml_charts, mrml_maps

        if self._dependenciesMissing():
            self.skipTest("torch or the module's Python packages are not installed (press Apply once)")
        self.delayDisplay("Making the phantom")
        logic = SaliencyInspectorLogic()
        ct, organs = logic.loadPhantomSample(size=(96, 96, 40))
        before = mrml.volume_from_node(ct)
        self.delayDisplay("Computing saliency")
        result = logic.process(ct, model="demo", methods=("hirescam", "gradcam"), device="cpu",
                               segmentationNode=organs)
        self.assertIsNotNone(result)
        for (method, className), node in result["nodes"].items():
            saliency = logic.mapOnCtGrid(node, ct)  # the nodes hold raw maps; on the CT grid on demand
            self.assertTrue(saliency.same_grid(before), f"{method}/{className} is not on the CT grid")
        self.assertEqual(len(mrml_maps.slot_nodes(slicer.mrmlScene)), 2)  # the views' shared CT-grid nodes
        after = mrml.volume_from_node(ct)
        self.assertTrue(np.array_equal(after.array, before.array))  # the input is untouched
        columns = mrml_charts.table_columns(result["metrics"])
        self.assertIn("roc_auc", columns)
        self.assertEqual(len(columns["segment"]), result["metrics"].GetNumberOfRows())
        self.delayDisplay("Test passed")

    def _dependenciesMissing(self) -> bool:
        return not SaliencyInspectorLogic().dependenciesInstalled()
