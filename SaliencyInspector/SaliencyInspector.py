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
import importlib.util
from enum import Enum
from typing import Annotated

import vtk

import slicer
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin
from slicer import (vtkMRMLPlotChartNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode,
                    vtkMRMLTableNode)

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS_PATH = os.path.join(MODULE_DIR, "Resources", "requirements.txt")
MINIMUM_TORCH = ">=2.2"
# Slicer ships these; pip must never replace them (nor pull torch from PyPI: PyTorchUtils installs it)
SLICER_OWNED_PACKAGES = ["SimpleITK", "vtk", "numpy", "torch", "torchvision", "torchaudio"]
METHOD_LABELS = {"hirescam": "HiResCAM", "gradcam": "Grad-CAM"}
PHANTOM_SAMPLE_NAME = "SaliencyPhantom"
ROC_PLOT_POINTS = 400  # points per ROC series in the plot chart (the table holds the exact AUC)


#
# Module
#
class SaliencyInspector(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Saliency Inspector")
        self.parent.categories = [_("Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["SaliencyInspector contributors"]
        self.parent.helpText = _(
            "Explain a CT classifier: HiResCAM and Grad-CAM maps for every class on the CT's own grid, "
            "shown over the CT and its organ segmentation, and scored against the organs "
            "(Dice, ROC AUC, AUPRC, IoA, mass in mask, pointing game). "
            "Try it with the phantom in the Sample Data module and the built-in demo model."
        )
        self.parent.helpText += self.getDefaultModuleDocumentationLink()
        self.parent.acknowledgementText = _(
            "Uses MONAI, Captum and PyTorch. HiResCAM: Draelos & Carin, arXiv:2011.08891. "
            "Grad-CAM: Selvaraju et al., ICCV 2017."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Register the synthetic phantom with Sample Data: made locally on click, nothing downloaded."""
    import SampleData

    iconsPath = os.path.join(MODULE_DIR, "Resources", "Icons")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="SaliencyInspector",
        sampleName=PHANTOM_SAMPLE_NAME,
        # the URIs are never fetched: customDownloader makes the files (see loadPhantomSample)
        uris=["phantom://ct", "phantom://organs"],
        fileNames=["SaliencyPhantom-ct.nrrd", "SaliencyPhantom-organs.seg.nrrd"],
        nodeNames=["SaliencyPhantom CT", "SaliencyPhantom organs"],
        thumbnailFileName=os.path.join(iconsPath, "SaliencyInspector.png"),
        loadFileType=["VolumeFile", "SegmentationFile"],
        customDownloader=lambda source: SaliencyInspectorLogic().loadPhantomSample(),
    )


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
    className: str = "all"
    targetLayer: str = ""
    device: Device = Device.AUTO
    threshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    shownSaliency: vtkMRMLScalarVolumeNode
    predictionsTable: vtkMRMLTableNode
    metricsTable: vtkMRMLTableNode
    rocChart: vtkMRMLPlotChartNode


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
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.classComboBox.connect("currentIndexChanged(int)", self.onClassChanged)
        self.ui.shownSaliencySelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onShownSaliencyChanged)
        self.ui.thresholdSliderWidget.connect("valueChanged(double)", self.onDisplayChanged)
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.onDisplayChanged)
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
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(p and p.inputVolume and (p.hirescam or p.gradcam) and (p.useDemoModel or p.modelPath))
        self.ui.applyButton.enabled = ready and not self._running
        if not p or not p.inputVolume:
            self.ui.applyButton.toolTip = _("Select a CT volume")
        elif not (p.hirescam or p.gradcam):
            self.ui.applyButton.toolTip = _("Select at least one method")
        elif not (p.useDemoModel or p.modelPath):
            self.ui.applyButton.toolTip = _("Choose a model file or use the demo model")
        else:
            self.ui.applyButton.toolTip = _("Compute saliency maps, score them and show them")
        self.ui.modelPathLineEdit.enabled = bool(p) and not p.useDemoModel

    # ---- actions -------------------------------------------------------------------------
    def onModelPathChanged(self, path) -> None:
        if self._parameterNode:
            self._parameterNode.modelPath = path

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
        self.ui.statusLabel.text = _("Cancelling after the current step…")

    def onApplyButton(self) -> None:
        p = self._parameterNode
        if not self.logic.ensureDependencies(askConfirmation=True):
            self.ui.statusLabel.text = _("Not run: the required Python packages were not installed.")
            return
        methods = [m for m, on in (("hirescam", p.hirescam), ("gradcam", p.gradcam)) if on]
        self._running = True
        self.ui.applyButton.enabled = False
        self.ui.cancelButton.enabled = True
        self.ui.progressBar.show()
        self.ui.progressBar.setRange(0, 0)  # busy indicator; steps are reported in the label
        try:
            with slicer.util.tryWithErrorDisplay(_("Saliency computation failed."), waitCursor=True):
                result = self.logic.process(
                    p.inputVolume, model="demo" if p.useDemoModel else p.modelPath, methods=methods,
                    classes=p.className or "all", layer=p.targetLayer or None, device=p.device.value,
                    segmentationNode=p.segmentation, threshold=p.threshold, opacity=p.opacity,
                    progress=self._showProgress)
                if result is not None:
                    p.predictionsTable = result["predictions"]
                    p.metricsTable = result.get("metrics")
                    p.rocChart = result.get("roc")
                    p.shownSaliency = result["shown"]
                    self._fillClassComboBox(result["classNames"])
                    self.ui.predictionsTableView.setMRMLTableNode(result["predictions"])
                    self.ui.statusLabel.text = result["message"]
                else:
                    self.ui.statusLabel.text = _("Cancelled; the scene is unchanged.")
        finally:
            self._running = False
            self.ui.cancelButton.enabled = False
            self.ui.progressBar.hide()
            self._checkCanApply()

    def _showProgress(self, message) -> None:
        self.ui.statusLabel.text = message
        slicer.app.processEvents()  # keep the GUI painting and the Cancel button clickable

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
        if node is not None and self._parameterNode and self._parameterNode.inputVolume:
            self.logic.showSaliency(self._parameterNode.inputVolume, node, self._parameterNode.threshold,
                                    self._parameterNode.opacity)

    def onDisplayChanged(self, _value=None) -> None:
        p = self._parameterNode
        if p and p.shownSaliency and p.inputVolume:
            self.logic.showSaliency(p.inputVolume, p.shownSaliency, p.threshold, p.opacity)

    def onCompareButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot show the comparison."), waitCursor=True):
            self.logic.showComparison(p.inputVolume, p.shownSaliency, p.threshold, p.opacity,
                                      p.metricsTable, p.rocChart)


#
# Logic
#
class CancelledError(RuntimeError):
    """The user pressed Cancel."""


class SaliencyInspectorLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, callable from Slicer's Python console:

    >>> logic = slicer.util.getModuleLogic("SaliencyInspector")
    >>> nodes = logic.explain(volumeNode)                      # {(method, class): saliency node}
    >>> table = logic.evaluate(nodes[("hirescam", "liver")], segmentationNode)
    >>> logic.show(volumeNode, nodes[("hirescam", "liver")], segmentationNode)
    """

    _classifierCache = {}  # (model, device) -> Classifier: switching class or method does not reload

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.cancelRequested = False
        self.lastDevice = None  # the device the last explain() ran on (after any CPU fallback)

    def getParameterNode(self):
        return SaliencyInspectorParameterNode(super().getParameterNode())

    # ---- dependencies --------------------------------------------------------------------
    def ensureDependencies(self, askConfirmation=True) -> bool:
        """torch through the PyTorch extension, monai/captum/slicerio through pip (after asking).

        Returns False, with a message, when the user declines; nothing is installed at import time.
        """
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            slicer.util.errorDisplay(_("This module needs the PyTorch extension. Install it from the "
                                       "Extensions Manager, restart Slicer, then try again."))
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            torch = torchLogic.installTorch(askConfirmation=askConfirmation,
                                            torchVersionRequirement=MINIMUM_TORCH)
            if torch is None:
                slicer.util.warningDisplay(_("PyTorch was not installed, so no saliency maps can be computed."))
                return False
        try:
            if hasattr(slicer, "pydeps") or _importable("slicer.pydeps"):
                # import_module, not `import slicer.pydeps`: that statement would make `slicer` a
                # local name of this whole function (UnboundLocalError on the lines above)
                pydeps = importlib.import_module("slicer.pydeps")
                requirements = pydeps.load_requirements(REQUIREMENTS_PATH)
                pydeps.pip_ensure(requirements, skip_packages=SLICER_OWNED_PACKAGES,
                                  prompt_install=askConfirmation, requester="SaliencyInspector")
            else:  # Slicer < 5.11: ask ourselves, then pip_install without letting pip touch torch
                missing = _missingRequirements(REQUIREMENTS_PATH)
                if missing:
                    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                            _("SaliencyInspector needs these Python packages: {packages}. Install them now?")
                            .format(packages=", ".join(missing))):
                        raise RuntimeError("declined")
                    slicer.util.pip_install(" ".join(missing))
        except RuntimeError:  # pip_ensure raises RuntimeError when the user declines
            slicer.util.warningDisplay(_("The required Python packages were not installed; nothing was computed."))
            return False
        return True

    # ---- the steps -----------------------------------------------------------------------
    def loadClassifier(self, model="demo", device="auto", progress=None):
        """The classifier for ``model`` ("demo" or a file/folder path), cached between runs.

        A model that fails to load raises InputError with the reason. ``device="auto"`` uses
        the GPU when there is one.
        """
        from saliency_inspector.errors import InputError
        from saliency_inspector.models.demo_model import demo_classifier
        from saliency_inspector.models.loading import load_classifier

        key = (str(model), str(device))
        if key not in self._classifierCache:
            say = progress or logging.info
            say(_("Loading model {model}…").format(model=model))
            try:
                classifier = demo_classifier(device) if model == "demo" else load_classifier(model, device=device)
            except InputError:
                raise
            except Exception as err:  # anything else from a foreign model file: one clear message
                raise InputError(f"{model}: the model could not be loaded ({type(err).__name__}: {err}); "
                                 "check the file and its model card") from err
            self._classifierCache[key] = classifier
        return self._classifierCache[key]

    def explain(self, volumeNode, model="demo", methods=("hirescam", "gradcam"), classes="all",
                layer=None, device="auto", progress=None):
        """Saliency volume nodes {(method, class): node} on the CT node's grid, plus predictions.

        Returns ``(nodes, explanation, predictionsTableNode)``. A CUDA out-of-memory error falls
        back to the CPU and says so through ``progress`` and the log.
        """
        from saliency_inspector import mrml
        from saliency_inspector.explain.explanation import explain

        say = self._progress(progress)
        ct = mrml.volume_from_node(volumeNode)  # InputError for no / non-scalar / 2D volumes
        classifier = self.loadClassifier(model, device, say)
        try:
            explanation = explain(classifier, ct, methods=methods, classes=classes, layer=layer, progress=say)
        except Exception as err:
            if not _isCudaOutOfMemory(err):
                raise
            message = _("The GPU ran out of memory; computing on the CPU instead (slower).")
            logging.warning(message)
            say(message)
            _emptyCudaCache()
            classifier = self.loadClassifier(model, "cpu", say)
            explanation = explain(classifier, ct, methods=methods, classes=classes, layer=layer, progress=say)
        self.lastDevice = str(classifier.device)
        say(_("Creating saliency volumes…"))
        scene = slicer.mrmlScene
        nodes = {}
        run = scene.GenerateUniqueName("SaliencyInspectorRun")  # ties the maps of one run together
        for (method, className), saliency in explanation.maps.items():
            name = slicer.mrmlScene.GenerateUniqueName(
                f"{volumeNode.GetName()} {METHOD_LABELS.get(method, method)} {className}")
            node = mrml.add_saliency_node(scene, saliency, volumeNode, name, ct=ct)
            mrml.set_saliency_display(node, mrml.display_window(saliency), threshold=0.2)
            node.SetAttribute("SaliencyInspector.Method", method)
            node.SetAttribute("SaliencyInspector.Class", className)
            node.SetAttribute("SaliencyInspector.Run", run)
            nodes[(method, className)] = node
        predictions = mrml.add_predictions_table(
            scene, explanation.class_names, explanation.probabilities, explanation.logits,
            name=scene.GenerateUniqueName(f"{volumeNode.GetName()} predictions"))
        return nodes, explanation, predictions

    def evaluate(self, saliencyNode, segmentationNode, volumeNode=None, rocChart=True):
        """Score a saliency node against the segments: metrics table node (and ROC chart node).

        Returns ``(tableNode, chartNode or None, EvaluationTable)``.
        """
        from saliency_inspector.evaluate import metrics
        from saliency_inspector import mrml

        referenceNode = volumeNode or saliencyNode
        segments = mrml.segments_from_node(segmentationNode, referenceNode, slicer.modules.segmentations.logic())
        saliency = mrml.volume_from_node(saliencyNode, what="saliency map")
        ct = mrml.volume_from_node(volumeNode) if volumeNode is not None else None
        table = metrics.evaluate(saliency, segments, region="auto", ct=ct)
        scene = slicer.mrmlScene
        tableNode = mrml.add_metrics_table(scene, table.rows,
                                           name=scene.GenerateUniqueName(f"{saliencyNode.GetName()} metrics"),
                                           metrics_info=metrics.METRICS)
        chartNode = None
        if rocChart:
            region = _evaluationRegion(table, segments, ct, saliency)
            curves = {}
            for name in segments.names:
                if name.lower() == "body" or not segments.mask(name).any():
                    continue
                fpr, tpr, _thresholds = metrics.roc_curve(saliency, segments.mask(name), region)
                curves[name] = metrics.thin_curve(fpr, tpr, points=ROC_PLOT_POINTS)
            chartNode = mrml.add_roc_chart(scene, curves, colors=segments.colors,
                                           name=scene.GenerateUniqueName(f"{saliencyNode.GetName()} ROC"))
        return tableNode, chartNode, table

    def trust(self, volumeNode, saliencyNode, model="demo", secondModel=None, segmentationNode=None,
              fixationsPath=None, device="auto", progress=None):
        """The trust card of the shown map's method and class (randomization, repeatability with
        ``secondModel``, localization with ``segmentationNode``, gaze with ``fixationsPath``).

        Returns ``(tableNode, chartNode, TrustCard)``: the card in a table node, the randomization
        curves in a plot chart node.
        """
        from saliency_inspector import mrml
        from saliency_inspector.errors import InputError
        from saliency_inspector.trust_card import run_trust

        say = self._progress(progress)
        method = saliencyNode.GetAttribute("SaliencyInspector.Method")
        className = saliencyNode.GetAttribute("SaliencyInspector.Class")
        if not method or not className:
            raise InputError(f"{saliencyNode.GetName()}: not a map made by SaliencyInspector (no method/class); "
                             "compute the maps with Apply first")
        ct = mrml.volume_from_node(volumeNode)
        models = [self.loadClassifier(model, device, say)]
        if secondModel:
            models.append(self.loadClassifier(secondModel, device, say))
        segments = None
        if segmentationNode is not None:
            segments = mrml.segments_from_node(segmentationNode, volumeNode, slicer.modules.segmentations.logic())
        card = run_trust(ct, models, methods=[method], class_name=className, masks=segments,
                         fixations=fixationsPath, progress=say).card
        scene = slicer.mrmlScene
        tableNode = mrml.add_trust_table(scene, card, name=scene.GenerateUniqueName(f"{saliencyNode.GetName()} trust"))
        chartNode = mrml.add_randomization_chart(
            scene, card, name=scene.GenerateUniqueName(f"{saliencyNode.GetName()} randomization"))
        return tableNode, chartNode, card

    def showSaliency(self, volumeNode, saliencyNode, threshold=0.2, opacity=0.5, volumeRendering=True):
        """Heat overlay in every slice view (threshold, opacity, colour legend) and in 3D."""
        from saliency_inspector import mrml

        window = (saliencyNode.GetDisplayNode().GetWindowLevelMin(), saliencyNode.GetDisplayNode().GetWindowLevelMax())
        mrml.set_saliency_display(saliencyNode, window, threshold=threshold)
        mrml.show_in_slice_views(slicer.mrmlScene, volumeNode, saliencyNode, opacity=opacity)
        mrml.add_color_legend(saliencyNode, slicer.modules.colors.logic())
        if volumeRendering:
            vrLogic = slicer.modules.volumerendering.logic()
            for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
                vrDisplay = vrLogic.GetFirstVolumeRenderingDisplayNode(node)
                # one saliency map in 3D at a time; the user's own volumes are left alone
                if (vrDisplay is not None and node is not saliencyNode
                        and node.GetAttribute("SaliencyInspector.Saliency") == "1"):
                    vrDisplay.SetVisibility(False)
            mrml.setup_volume_rendering(saliencyNode, vrLogic, window, threshold=threshold, method=None)

    def show(self, volumeNode, saliencyNode, segmentationNode=None, threshold=0.2, opacity=0.5):
        """Overlay + 3D view with the segmentation's surfaces."""
        from saliency_inspector import mrml

        if segmentationNode is not None:
            mrml.show_segmentation(segmentationNode)
        self.showSaliency(volumeNode, saliencyNode, threshold, opacity)
        slicer.util.resetSliceViews()

    def showComparison(self, volumeNode, saliencyNode, threshold=0.2, opacity=0.5, tableNode=None, chartNode=None):
        """HiResCAM (red view) beside Grad-CAM (yellow view) for the same class, 3D, table and chart."""
        from saliency_inspector import mrml
        from saliency_inspector.errors import InputError

        if volumeNode is None or saliencyNode is None:
            raise InputError("nothing to compare yet; compute the saliency maps first")
        className = saliencyNode.GetAttribute("SaliencyInspector.Class")
        run = saliencyNode.GetAttribute("SaliencyInspector.Run")
        pair = {}  # method -> the map of the same class from the same run
        for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if (node.GetAttribute("SaliencyInspector.Class") == className
                    and node.GetAttribute("SaliencyInspector.Run") == run):
                pair[node.GetAttribute("SaliencyInspector.Method")] = node
        layoutManager = slicer.app.layoutManager()
        mrml.set_compare_layout(layoutManager.layoutLogic().GetLayoutNode())
        slicer.app.processEvents()  # let the layout create the views (and their composite nodes)
        slicer.app.layoutManager().sliceWidget("Yellow").mrmlSliceNode().SetOrientationToAxial()
        for viewName, method in (("Red", "hirescam"), ("Yellow", "gradcam")):
            node = pair.get(method, saliencyNode)
            window = (node.GetDisplayNode().GetWindowLevelMin(), node.GetDisplayNode().GetWindowLevelMax())
            mrml.set_saliency_display(node, window, threshold=threshold)
            mrml.show_in_slice_views(slicer.mrmlScene, volumeNode, node, opacity=opacity, view_names=[viewName])
        mrml.show_table_and_chart(slicer.app.applicationLogic(), tableNode, chartNode)
        slicer.util.resetSliceViews()

    def process(self, volumeNode, model="demo", methods=("hirescam", "gradcam"), classes="all", layer=None,
                device="auto", segmentationNode=None, threshold=0.2, opacity=0.5, progress=None):
        """The whole job for the widget: explain, predictions table, metrics for the top class, display.

        Returns a dict of the created nodes and a one-line summary, or None when cancelled. The
        input nodes are never modified; all output nodes are new.
        """
        self.cancelRequested = False
        try:
            nodes, explanation, predictions = self.explain(volumeNode, model, methods, classes, layer, device, progress)
        except CancelledError:
            return None
        # show the most probable explained class first
        probabilities = dict(zip(explanation.class_names, explanation.probabilities))
        topClass = max(explanation.classes, key=lambda c: probabilities.get(c, 0.0))
        shown = nodes.get((methods[0], topClass)) or next(iter(nodes.values()))
        result = {"predictions": predictions, "nodes": nodes, "shown": shown, "classNames": explanation.class_names}
        if segmentationNode is not None:
            result["metrics"], result["roc"], _table = self.evaluate(shown, segmentationNode, volumeNode)
        self.show(volumeNode, shown, segmentationNode, threshold, opacity)
        if "metrics" in result:
            layoutManager = slicer.app.layoutManager()
            if layoutManager is not None:
                self.showComparison(volumeNode, shown, threshold, opacity, result["metrics"], result["roc"])
        result["message"] = _("{n} maps; most probable class: {c} ({p:.2f}); device: {d}").format(
            n=len(nodes), c=topClass, p=probabilities.get(topClass, float("nan")),
            d=self.lastDevice)
        return result

    def loadPhantomSample(self, seed=0, size=(192, 192, 64)):
        """Make the synthetic phantom (no download), load CT and organs; returns (volume, segmentation)."""
        from saliency_inspector.models.demo_model import LESION_SCALE
        from saliency_inspector.synth.phantom import make_phantom, write_phantom_case

        folder = os.path.join(slicer.app.temporaryPath, "SaliencyInspector", f"phantom-{seed}")
        case = make_phantom(seed=seed, size=size, lesion_scale=LESION_SCALE)  # the demo model's lesion size
        paths = write_phantom_case(case, folder)
        ct = slicer.util.loadVolume(str(paths["ct"]), {"name": "SaliencyPhantom CT"})
        organs = slicer.util.loadSegmentation(str(paths["organs"]), {"name": "SaliencyPhantom organs"})
        organs.SetReferenceImageGeometryParameterFromVolumeNode(ct)
        ct.GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
        ct.GetDisplayNode().AutoWindowLevelOff()
        ct.GetDisplayNode().SetWindowLevel(400, 40)
        return ct, organs

    def _progress(self, progress):
        def say(message):
            logging.info(message)
            if progress:
                progress(message)
            if self.cancelRequested:
                raise CancelledError("cancelled by the user")
        return say


def _importable(name) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _missingRequirements(path) -> list:
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", "-")):
                continue
            req = Requirement(line)
            try:
                if version(req.name) not in req.specifier:
                    missing.append(line)
            except PackageNotFoundError:
                missing.append(line)
    return missing


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
    from saliency_inspector.evaluate import metrics

    region = str(table.region)
    if region.startswith("body (segment"):
        body = next(n for n in segments.names if n.lower() == "body")
        return segments.mask(body)
    if region.startswith("body") and ct is not None:
        return metrics.body_mask(ct, saliency)
    return None


#
# Test (runs inside Slicer: Developer mode, "Reload and Test", or ctest)
#
class SaliencyInspectorTest(ScriptedLoadableModuleTest):
    """Self-test on the phantom: geometry, maps, metrics table, bad input."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_bad_input()
        self.setUp()
        self.test_phantom_end_to_end()

    def test_bad_input(self):
        from saliency_inspector import mrml
        from saliency_inspector.errors import InputError

        logic = SaliencyInspectorLogic()
        with self.assertRaises(InputError):
            logic.explain(None)
        empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
        volume = slicer.util.addVolumeFromArray(__import__("numpy").zeros((8, 8, 8), "int16"), name="zeros")
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            mrml.segment_masks_from_node(empty, volume, slicer.modules.segmentations.logic())
        with self.assertRaises(InputError):
            logic.loadClassifier(os.path.join(slicer.app.temporaryPath, "no-such-model.pt2"), "cpu")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)

    def test_phantom_end_to_end(self):
        import numpy as np

        from saliency_inspector import mrml

        self.delayDisplay("Making the phantom")
        logic = SaliencyInspectorLogic()
        if not logic.ensureDependencies(askConfirmation=False):
            self.skipTest("dependencies are not installed")
        ct, organs = logic.loadPhantomSample(size=(96, 96, 40))
        before = mrml.volume_from_node(ct)
        self.delayDisplay("Computing saliency")
        result = logic.process(ct, model="demo", methods=("hirescam", "gradcam"), device="cpu",
                               segmentationNode=organs)
        self.assertIsNotNone(result)
        for (method, className), node in result["nodes"].items():
            saliency = mrml.volume_from_node(node)
            self.assertTrue(saliency.same_grid(before), f"{method}/{className} is not on the CT grid")
        after = mrml.volume_from_node(ct)
        self.assertTrue(np.array_equal(after.array, before.array))  # the input is untouched
        columns = mrml.table_columns(result["metrics"])
        self.assertIn("roc_auc", columns)
        self.assertEqual(len(columns["segment"]), result["metrics"].GetNumberOfRows())
        self.delayDisplay("Test passed")
