"""MRML glue: Slicer scene nodes ⇄ the core's plain data (Volume, Segments), and the saliency
display. Results as table and plot chart nodes, and the compare layout: :mod:`.mrml_charts`.

Every function takes the scene (and the module logics it needs) as arguments and never reaches
for ``slicer.mrmlScene``, ``slicer.modules`` or ``slicer.app``. That is what lets the same code run
inside the Slicer application (the module's Logic passes ``slicer.mrmlScene`` and the real logics)
and on real MRML in plain Python tests (``slicer-core``, no Qt).

Geometry: MRML speaks RAS, the core speaks LPS. The conversion happens only through
``Volume.ijk_to_ras()`` and ``volume_from_ijk_to_ras()``. A volume node's parent transform is not
applied: a saliency node created for a CT is put under the CT's parent transform instead, so both
stay in the same frame.

Nothing here modifies an input node; functions only create new nodes or change the display of
nodes they created (saliency, segmentations) and the slice/3D view settings.
"""

from __future__ import annotations

import numpy as np
import vtk
from vtk.util import numpy_support

from .errors import InputError
from .io.volume import Volume, volume_from_ijk_to_ras

# Default look of a saliency overlay: a heat colormap from a real Slicer color node.
HEAT_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileInferno.txt"
FALLBACK_COLOR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"


# ---- volumes ----------------------------------------------------------------------------------
def volume_from_node(volume_node, what: str = "CT volume") -> Volume:
    """The scalar volume node's voxels and geometry as a :class:`Volume` (array copied, LPS).

    Raises InputError for no node, a non-scalar (vector/RGB/tensor) volume, a volume without
    voxels, a 2D image, or a node under a non-linear transform.
    """
    if volume_node is None:
        raise InputError(f"no {what} selected; choose a volume in the input selector")
    name = volume_node.GetName()
    image = volume_node.GetImageData() if volume_node.IsA("vtkMRMLVolumeNode") else None
    # vector (RGB) and tensor volumes derive from the scalar volume class: check components too
    if (not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.IsA("vtkMRMLVectorVolumeNode")
            or volume_node.IsA("vtkMRMLDiffusionTensorVolumeNode")
            or (image is not None and image.GetNumberOfScalarComponents() != 1)):
        raise InputError(f"{what} '{name}' is a {volume_node.GetClassName()}, not a scalar volume; "
                         "select a scalar (grayscale) CT volume")
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"{what} '{name}' has no voxel data; load the image again")
    dims = image.GetDimensions()
    if min(dims) < 2:
        raise InputError(f"{what} '{name}' is a 2D image of size {dims}; a CT must be a 3D volume")
    transform = volume_node.GetParentTransformNode()
    if transform is not None and not transform.IsTransformToWorldLinear():
        raise InputError(f"{what} '{name}' is under a non-linear transform; harden the transform "
                         "(Data module, right-click, Harden transform) first")
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = scalars.reshape(dims[2], dims[1], dims[0]).copy()
    return volume_from_ijk_to_ras(array, _ijk_to_ras(volume_node))


def update_node_from_volume(volume_node, volume: Volume) -> None:
    """Put ``volume``'s voxels and geometry (LPS → RAS) into an existing volume node."""
    array = np.ascontiguousarray(volume.array)
    if array.dtype == bool:  # VTK has no bool voxels: masks become 0/1 uint8
        array = array.astype(np.uint8)
    image = vtk.vtkImageData()
    image.SetDimensions(*volume.size_xyz)  # geometry lives on the node, image origin/spacing stay default
    vtk_array = numpy_support.numpy_to_vtk(array.ravel(), deep=True,
                                           array_type=numpy_support.get_vtk_array_type(array.dtype))
    image.GetPointData().SetScalars(vtk_array)
    matrix = vtk.vtkMatrix4x4()
    ijk_to_ras = volume.ijk_to_ras()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(ijk_to_ras[r, c]))
    volume_node.SetIJKToRASMatrix(matrix)
    volume_node.SetAndObserveImageData(image)


def add_volume_node(scene, volume: Volume, name: str, reference_node=None,
                    class_name: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node in ``scene`` holding ``volume``; under ``reference_node``'s transform if given."""
    node = scene.AddNewNodeByClass(class_name, name)
    update_node_from_volume(node, volume)
    if reference_node is not None and reference_node.GetParentTransformNode() is not None:
        node.SetAndObserveTransformNodeID(reference_node.GetParentTransformNode().GetID())
    node.CreateDefaultDisplayNodes()
    return node


def add_saliency_node(scene, saliency: Volume, ct_node, name: str, ct: Volume | None = None):
    """A float saliency volume node on the CT node's grid.

    ``saliency`` must already be on the CT's grid (explain() maps it there); checked against
    ``ct`` (read from ``ct_node`` when not given).
    """
    ct = volume_from_node(ct_node) if ct is None else ct
    if not saliency.same_grid(ct):
        raise InputError(f"saliency map '{name}' is not on the CT's grid ({saliency.describe_grid()} vs "
                         f"{ct.describe_grid()}); resample it onto the CT first")
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    # the display node first, automatic window/level off: its histogram of the whole map (~70 ms on
    # 192x192x64, seconds on a full CT) would run on Slicer's GUI thread and be overwritten by
    # set_saliency_display anyway
    display = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    display.AutoWindowLevelOff()
    display.SetAndObserveColorNodeID(HEAT_COLOR_NODE_ID)
    node.SetAndObserveDisplayNodeID(display.GetID())
    update_node_from_volume(node, saliency.with_array(saliency.array.astype(np.float32, copy=False)))
    if ct_node.GetParentTransformNode() is not None:
        node.SetAndObserveTransformNodeID(ct_node.GetParentTransformNode().GetID())
    node.SetAttribute("SaliencyInspector.Saliency", "1")
    return node


def check_segmentation(segmentation_node) -> None:
    """InputError unless ``segmentation_node`` is a segmentation node with at least one segment."""
    if segmentation_node is None:
        raise InputError("no segmentation selected; choose a segmentation with organ segments")
    if not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"'{segmentation_node.GetName()}' is a {segmentation_node.GetClassName()}, not a "
                         "segmentation; choose a segmentation node with organ segments")
    if segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
        raise InputError(f"segmentation '{segmentation_node.GetName()}' has no segments; "
                         "add organ segments (e.g. with TotalSegmentator) first")


# ---- segmentations ----------------------------------------------------------------------------
def segments_from_node(segmentation_node, reference_node, segmentations_logic, segment_names=None):
    """The segmentation as a core ``Segments`` on ``reference_node``'s voxel grid, exported as labelmaps
    (``.masks`` / ``.colors`` give one bool mask / colour per segment name).

    One export per labelmap layer of the segmentation (segments sharing a layer never overlap; an
    organ and its lesion sit in different layers, so every voxel is kept), each a small-integer
    volume — not one array per segment (117 TotalSegmentator segments in one layer are one export).
    Duplicate segment names are kept apart as ``liver``, ``liver (2)``. ``segment_names`` (the
    unique names) limits the export. ``segmentations_logic`` is a vtkSlicerSegmentationsModuleLogic
    (its export is a static method; the argument keeps the dependency explicit).
    """
    from .io.segments import Segments, unique_names

    check_segmentation(segmentation_node)
    grid = volume_from_node(reference_node)
    segmentation = segmentation_node.GetSegmentation()
    ids = list(segmentation.GetSegmentIDs())
    by_name = dict(zip(unique_names([segmentation.GetSegment(i).GetName() for i in ids]), ids))
    if segment_names is not None:
        missing = [n for n in segment_names if n not in by_name]
        if missing:
            raise InputError(f"segmentation '{segmentation_node.GetName()}' has no segment named "
                             f"{', '.join(missing)}; it has {', '.join(by_name)}")
        by_name = {n: by_name[n] for n in segment_names}
    groups = {}  # Slicer's layer index -> [(name, id)]; a segment without a layer is its own group
    for name, segment_id in by_name.items():
        layer = segmentation.GetLayerIndex(segment_id)
        groups.setdefault(layer if layer >= 0 else f"alone:{segment_id}", []).append((name, segment_id))
    scene = segmentation_node.GetScene()
    existing = _node_ids(scene)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__saliency_inspector_export")
    layers, entries = [], []
    try:
        for members in groups.values():
            ids_array = vtk.vtkStringArray()
            for _name, segment_id in members:
                ids_array.InsertNextValue(segment_id)
            # without a colour table the export labels the n-th listed segment n + 1
            # (vtkSlicerSegmentationsModuleLogic::ExportSegmentsToLabelmapNode)
            ok = segmentations_logic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids_array, labelmap, reference_node, _extent_reference_geometry())
            if not ok:
                raise InputError(f"segments {', '.join(n for n, _ in members)} could not be exported onto "
                                 f"'{reference_node.GetName()}'")
            exported = volume_from_node(labelmap, what="exported segments")
            if exported.shape != grid.shape:
                raise InputError(f"segments came back with shape {exported.shape}, expected the CT's {grid.shape}")
            dtype = np.uint8 if len(members) < 256 else np.uint16
            layers.append(exported.array.astype(dtype))
            for label, (name, segment_id) in enumerate(members, start=1):
                color = tuple(float(c) for c in segmentation.GetSegment(segment_id).GetColor())
                entries.append((name, len(layers) - 1, label, color))
    finally:
        # the temporary labelmap (and the colour table the export makes for it) never stay in the scene
        _remove_nodes_added_since(scene, existing)
    order = {name: n for n, name in enumerate(by_name)}  # entries in the segmentation's order
    entries.sort(key=lambda e: order[e[0]])
    return Segments.from_layers(layers, entries, grid)


def add_segmentation_node(scene, masks: dict, reference_node, segmentations_logic,
                          colors: dict | None = None, name: str = "Organs"):
    """A new segmentation node with one segment per mask (masks on ``reference_node``'s grid).

    Each mask goes through a temporary labelmap node and the segmentations logic's import, so the
    segments have the reference geometry exactly.
    """
    grid = volume_from_node(reference_node, what="reference volume")
    colors = colors or {}
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    segmentation = node.GetSegmentation()
    for segment_name, mask in masks.items():
        mask = np.asarray(mask)
        if mask.shape != grid.shape:
            raise InputError(f"mask '{segment_name}' has shape {mask.shape}, the reference volume "
                             f"{grid.shape}; resample the mask onto the volume first")
        existing = _node_ids(scene)
        labelmap = add_volume_node(scene, grid.with_array(mask.astype(np.uint8)), "__si_import",
                                   class_name="vtkMRMLLabelMapVolumeNode")
        try:
            before = set(segmentation.GetSegmentIDs())
            segmentations_logic.ImportLabelmapToSegmentationNode(labelmap, node, "")
            added = [i for i in segmentation.GetSegmentIDs() if i not in before]
        finally:
            _remove_nodes_added_since(scene, existing)
        if not added:  # an empty mask imports nothing; keep it as an empty segment
            added = [segmentation.AddEmptySegment(segment_name)]
        segment = segmentation.GetSegment(added[0])
        segment.SetName(segment_name)
        if segment_name in colors:
            segment.SetColor(*[float(c) for c in colors[segment_name]])
    return node


def write_segmentation_node(segmentation_node, path) -> None:
    """Write the segmentation with Slicer's own writer (vtkMRMLSegmentationStorageNode, .seg.nrrd);
    the storage node is removed again, the segmentation node is not changed."""
    scene = segmentation_node.GetScene()
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    try:
        storage.SetFileName(str(path))
        if not storage.WriteData(segmentation_node):
            raise InputError(f"could not write segmentation '{segmentation_node.GetName()}' to {path}")
    finally:
        scene.RemoveNode(storage)


def show_segmentation(segmentation_node, fill_opacity: float = 0.0, opacity_3d: float = 0.35) -> None:
    """Outlines (fill off by default, so the heat overlay stays legible) in the slice views and
    translucent closed surfaces in 3D.

    This restyles the node's display and adds a closed-surface representation: use it on
    segmentations made by this tool (the phantom), not on the user's own (the module leaves those
    as they are)."""
    segmentation_node.CreateClosedSurfaceRepresentation()
    display = segmentation_node.GetDisplayNode()
    display.SetVisibility2DFill(fill_opacity > 0)
    display.SetVisibility2DOutline(True)
    display.SetOpacity2DFill(fill_opacity)
    display.SetVisibility3D(True)
    display.SetOpacity3D(opacity_3d)


# ---- saliency display -------------------------------------------------------------------------
def display_window(saliency: Volume | np.ndarray, percentile: float = 100.0) -> tuple[float, float]:
    """Display window (0, high) for the positive part S⁺ = ReLU(map); high is the maximum of S⁺
    (or a percentile of its positive values, to keep one hot voxel from washing out the rest)."""
    values = np.asarray(saliency.array if isinstance(saliency, Volume) else saliency, dtype=np.float64)
    positive = values[values > 0]
    if positive.size == 0:
        return 0.0, 1.0
    high = float(np.percentile(positive, percentile))
    return 0.0, high if high > 0 else float(positive.max())


def set_saliency_display(saliency_node, window: tuple[float, float], threshold: float = 0.2,
                         color_node_id: str = HEAT_COLOR_NODE_ID) -> None:
    """Heat colormap over ``window``; voxels below ``threshold`` × window high are transparent.

    ``threshold`` is a fraction of the window, clamped to 0..1, so one slider works for every map
    (above 1 the whole map would vanish).
    """
    threshold = min(max(float(threshold), 0.0), 1.0)
    scene = saliency_node.GetScene()
    if scene.GetNodeByID(color_node_id) is None:
        color_node_id = FALLBACK_COLOR_NODE_ID
    saliency_node.CreateDefaultDisplayNodes()
    display = saliency_node.GetDisplayNode()
    lo, hi = float(window[0]), float(window[1])
    display.SetAndObserveColorNodeID(color_node_id)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(lo, hi)
    display.AutoThresholdOff()
    display.ApplyThresholdOn()
    display.SetLowerThreshold(lo + float(threshold) * (hi - lo))
    display.SetUpperThreshold(float(np.finfo(np.float32).max))
    display.SetInterpolate(True)


def show_in_slice_views(scene, background_node, foreground_node=None, opacity: float = 0.5,
                        view_names=None) -> int:
    """Set background/foreground layers of the slice views (all, or those in ``view_names``).

    Returns how many views were set. Works on the scene's slice composite nodes, so it needs no Qt.
    """
    count = 0
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(i)
        if view_names is not None and composite.GetLayoutName() not in view_names:
            continue
        composite.SetBackgroundVolumeID(background_node.GetID() if background_node else None)
        composite.SetForegroundVolumeID(foreground_node.GetID() if foreground_node else None)
        composite.SetForegroundOpacity(float(opacity))
        count += 1
    return count


def add_color_legend(saliency_node, color_logic, view_node_ids=None):
    """A colour legend for the saliency node (vtkSlicerColorLogic), in every view or only in the
    views whose node IDs are given (the compare layout: each map's legend in its own view)."""
    legend = color_logic.AddDefaultColorLegendDisplayNode(saliency_node)  # None when it cannot be made
    if legend is not None:
        legend.SetTitleText(saliency_node.GetName())
        legend.SetLabelFormat("%.2g")  # the default %.1f prints 0.0 for every label of a small-valued map
        legend.RemoveAllViewNodeIDs()  # no view IDs: shown in every view
        for view_id in view_node_ids or ():
            legend.AddViewNodeID(view_id)
        legend.SetVisibility(True)
    return legend


def update_shown_saliency(scene, threshold=None, opacity=None, volume_rendering_logic=None) -> int:
    """Change the threshold (fraction of each map's window) and/or the overlay opacity of the
    saliency maps the slice views show now, and of their 3D rendering, leaving which map each view
    shows (and the layout) as it is. Returns the number of maps changed."""
    shown = {}
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(i)
        node = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
        if node is None or (node.GetAttribute("SaliencyInspector.Saliency") != "1"
                            and not node.GetAttribute("SaliencyInspector.Slot")):  # mrml_maps' shared nodes
            continue
        shown[node.GetID()] = node
        if opacity is not None:
            composite.SetForegroundOpacity(float(opacity))
    if threshold is not None:
        for node in shown.values():
            display = node.GetDisplayNode()
            window = (display.GetWindowLevelMin(), display.GetWindowLevelMax())
            set_saliency_display(node, window, threshold=threshold, color_node_id=display.GetColorNodeID())
            vr_display = (volume_rendering_logic.GetFirstVolumeRenderingDisplayNode(node)
                          if volume_rendering_logic is not None else None)
            if vr_display is not None and vr_display.GetVisibility():
                setup_volume_rendering(node, volume_rendering_logic, window, threshold=threshold, method=None)
    return len(shown)


def same_run_maps(scene, saliency_node) -> dict:
    """method → the saliency node of each method for ``saliency_node``'s class and run (node
    attributes ``SaliencyInspector.Class/Run/Method``); ``saliency_node`` itself for its own method."""
    class_name = saliency_node.GetAttribute("SaliencyInspector.Class")
    run = saliency_node.GetAttribute("SaliencyInspector.Run")
    pair = {}
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if (run is not None and node.GetAttribute("SaliencyInspector.Run") == run
                and node.GetAttribute("SaliencyInspector.Class") == class_name):
            pair.setdefault(node.GetAttribute("SaliencyInspector.Method"), node)
    pair[saliency_node.GetAttribute("SaliencyInspector.Method")] = saliency_node  # the map passed in wins
    return pair


def setup_volume_rendering(saliency_node, volume_rendering_logic, window: tuple[float, float],
                           threshold: float = 0.2, max_opacity: float = 0.6,
                           method: str | None = "vtkMRMLCPURayCastVolumeRenderingDisplayNode"):
    """Volume-render the saliency in 3D with the slice views' colours, transparent below threshold.

    ``method`` picks the ray caster (CPU works everywhere; None keeps the logic's default, e.g. GPU
    in the Slicer app). Returns the volume rendering display node.
    """
    if method:
        # must be set before the display node is created
        volume_rendering_logic.SetDefaultRenderingMethod(method)
    vr_display = volume_rendering_logic.GetFirstVolumeRenderingDisplayNode(saliency_node)
    if vr_display is None:
        vr_display = volume_rendering_logic.CreateDefaultVolumeRenderingNodes(saliency_node)
    lo, hi = float(window[0]), float(window[1])
    cut = lo + float(threshold) * (hi - lo)
    lookup = _lookup_table(saliency_node)
    prop = vr_display.GetVolumePropertyNode().GetVolumeProperty()
    colors = prop.GetRGBTransferFunction()
    colors.RemoveAllPoints()
    for t in np.linspace(0.0, 1.0, 9):
        rgb = lookup.GetTableValue(int(round(t * (lookup.GetNumberOfTableValues() - 1))))[:3]
        colors.AddRGBPoint(lo + t * (hi - lo), *rgb)
    opacity = prop.GetScalarOpacity()
    opacity.RemoveAllPoints()
    opacity.AddPoint(min(lo, cut - 1e-6 * (hi - lo + 1)), 0.0)
    opacity.AddPoint(cut, 0.0)
    opacity.AddPoint(hi, float(max_opacity))
    prop.SetShade(False)
    prop.SetInterpolationTypeToLinear()
    vr_display.SetVisibility(True)
    return vr_display


# ---- helpers ----------------------------------------------------------------------------------
def _ijk_to_ras(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _node_ids(scene) -> set:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _remove_nodes_added_since(scene, existing: set) -> None:
    for node_id in _node_ids(scene) - existing:
        node = scene.GetNodeByID(node_id)
        if node is not None:
            scene.RemoveNode(node)


def _extent_reference_geometry() -> int:
    from slicer import vtkSegmentation  # noqa: PLC0415  (slicer-core or the Slicer app)

    return vtkSegmentation.EXTENT_REFERENCE_GEOMETRY


def _lookup_table(volume_node):
    color_node = volume_node.GetDisplayNode().GetColorNode()
    lookup = color_node.GetLookupTable() if color_node is not None else None
    if lookup is None or lookup.GetNumberOfTableValues() < 2:
        lookup = vtk.vtkLookupTable()
        lookup.SetHueRange(0.0, 0.15)
        lookup.Build()
    return lookup
