"""Saliency maps in the scene on demand: small raw-map nodes, one shared CT-grid node per view.

A (method, class) map lives in the scene as its RAW map (``Explanation.raw``): a float32 volume
node on the map's own physical grid (the feature grid for CAMs, e.g. 12x12x8; the model-input grid
for gradient estimators), which is a few hundred kB where the same map on a 512x512x400 CT grid is
400 MB. It carries the attributes ``SaliencyInspector.Saliency/Method/Class/Run`` and a node
reference to its CT, and is what the module's "shown map" selector lists. Its geometry is the
raw grid's (LPS → RAS), so the CT-grid map can be made again from the node alone, also after the
scene is saved and loaded: ``resample_map(volume_from_node(raw), ct grid)`` is exactly
``Explanation.map``.

The CT-grid map is made only to be shown, into one node per view slot ("Red", "Yellow") and CT,
reused for every map shown there (its voxel buffer is overwritten in place). Scores, fidelity and
the trust card put the map on the CT grid in memory when they need it. So the scene holds at most
two CT-sized maps, however many (method, class) maps were computed.

Like :mod:`.mrml`, functions take the scene as an argument (no ``slicer`` import); putting the
raw map on the CT grid is the caller's (the Slicer module's Logic, with the core's
``resample_map``).
"""

from __future__ import annotations

import numpy as np
import vtk
from vtk.util import numpy_support

from .io.volume import Volume, volume_from_ijk_to_ras
from .mrml import HEAT_COLOR_NODE_ID, _ijk_to_ras, update_node_from_volume

RAW_ATTRIBUTE = "SaliencyInspector.Raw"  # "1" on a raw-map node
SLOT_ATTRIBUTE = "SaliencyInspector.Slot"  # the view slot ("Red", "Yellow") of a shared CT-grid node
CT_REFERENCE = "SaliencyInspector.CT"  # node reference role: raw map or slot node → its CT node
SOURCE_REFERENCE = "SaliencyInspector.Source"  # slot node → the raw map it shows now
COPIED_ATTRIBUTES = ("SaliencyInspector.Method", "SaliencyInspector.Class")


def add_raw_map_node(scene, raw: Volume, ct_node, name: str, attributes: dict):
    """A small float32 node holding the raw map on its own grid, referring to ``ct_node`` (under
    the CT's parent transform, so both stay in the same frame)."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    update_node_from_volume(node, raw.with_array(np.asarray(raw.array, dtype=np.float32)))
    if ct_node.GetParentTransformNode() is not None:
        node.SetAndObserveTransformNodeID(ct_node.GetParentTransformNode().GetID())
    node.SetNodeReferenceID(CT_REFERENCE, ct_node.GetID())
    node.SetAttribute("SaliencyInspector.Saliency", "1")
    node.SetAttribute(RAW_ATTRIBUTE, "1")
    for key, value in attributes.items():
        node.SetAttribute(key, str(value))
    return node


def is_raw_map(node) -> bool:
    """True for a raw-map node made by :func:`add_raw_map_node`."""
    return node is not None and node.GetAttribute(RAW_ATTRIBUTE) == "1"


def is_slot_node(node) -> bool:
    """True for a shared CT-grid node made by :func:`show_in_slot`."""
    return node is not None and bool(node.GetAttribute(SLOT_ATTRIBUTE))


def ct_node_of(node):
    """The CT node a raw-map or slot node refers to (None when it was removed)."""
    return node.GetNodeReference(CT_REFERENCE)


def source_of(node):
    """The map a slot node shows now (the node itself for any other node)."""
    return node.GetNodeReference(SOURCE_REFERENCE) if is_slot_node(node) else node


def slot_nodes(scene) -> list:
    """Every shared CT-grid node in the scene."""
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()) if is_slot_node(nodes.GetItemAsObject(i))]


def show_in_slot(scene, slot: str, source_node, ct_node, ct_grid_ijk_to_ras, shape_zyx, fill):
    """The shared node of ``slot`` for ``ct_node``, now holding ``source_node``'s map on the CT grid.

    Made on first use (float32, the CT's grid; a heat display with automatic window/level off);
    afterwards its voxel buffer is reused: ``fill(out)`` writes the map into ``out`` (float32,
    ``shape_zyx``) in place. The node takes the source's name, method and class.
    """
    node = next((n for n in slot_nodes(scene) if n.GetAttribute(SLOT_ATTRIBUTE) == slot
                 and ct_node_of(n) is ct_node), None)
    image = node.GetImageData() if node is not None else None
    if image is None or tuple(image.GetDimensions()) != tuple(int(n) for n in shape_zyx[::-1]):
        if node is None:
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"Saliency shown ({slot})")
            display = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
            display.AutoWindowLevelOff()  # its histogram pass would run on Slicer's GUI thread
            display.SetAndObserveColorNodeID(HEAT_COLOR_NODE_ID)
            node.SetAndObserveDisplayNodeID(display.GetID())
            node.SetAttribute(SLOT_ATTRIBUTE, slot)
            node.SetNodeReferenceID(CT_REFERENCE, ct_node.GetID())
        image = vtk.vtkImageData()  # allocated by VTK once: no CT-sized numpy copy on the way
        image.SetDimensions(*(int(n) for n in shape_zyx[::-1]))
        image.AllocateScalars(vtk.VTK_FLOAT, 1)
        node.SetIJKToRASMatrix(_matrix(ct_grid_ijk_to_ras))
        node.SetAndObserveImageData(image)
    scalars = node.GetImageData().GetPointData().GetScalars()
    fill(numpy_support.vtk_to_numpy(scalars).reshape(tuple(shape_zyx)))
    scalars.Modified()  # what slicer.util.arrayFromVolumeModified does: the views re-read the voxels
    node.GetImageData().Modified()
    transform = ct_node.GetParentTransformNode()
    node.SetAndObserveTransformNodeID(transform.GetID() if transform is not None else None)
    node.SetNodeReferenceID(SOURCE_REFERENCE, source_node.GetID())
    for key in COPIED_ATTRIBUTES:
        node.SetAttribute(key, source_node.GetAttribute(key) or "")
    node.SetName(f"{source_node.GetName()} ({slot} view)")
    return node


def grid_of(volume_node) -> Volume:
    """The volume node's grid as a geometry-only Volume (a zero-memory broadcast array)."""
    dims = volume_node.GetImageData().GetDimensions()
    return volume_from_ijk_to_ras(np.broadcast_to(np.zeros((), np.float32), tuple(dims[::-1])),
                                  _ijk_to_ras(volume_node))


def _matrix(ijk_to_ras):
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(ijk_to_ras[r][c]))
    return matrix


def add_3d_color_legend(volume_node, vr_display, view_node_ids=()):
    """A colour legend in the 3D views for a volume-rendered map.

    Slicer draws a volume's legend in a 3D view only when a slice plane showing that volume is
    visible in that 3D view (Modules/Loadable/Colors/MRMLDM/vtkMRMLColorLegendDisplayableManager.cxx,
    ``UpdateActor``: the ``vtkMRMLVolumeDisplayNode`` branch); for any other primary display node
    it follows that node's visibility. So this legend's primary display node is the volume
    rendering display node, given the slice display's colour node and window as its colours and
    range: the legend shows wherever the rendering shows. Reused when called again; returns it.
    """
    scene = volume_node.GetScene()
    display = volume_node.GetDisplayNode()
    vr_display.SetAndObserveColorNodeID(display.GetColorNodeID())  # read by the legend, not the renderer
    vr_display.SetScalarRange(display.GetWindowLevelMin(), display.GetWindowLevelMax())
    legend = None
    for i in range(volume_node.GetNumberOfDisplayNodes()):
        candidate = volume_node.GetNthDisplayNode(i)
        if (candidate is not None and candidate.IsA("vtkMRMLColorLegendDisplayNode")
                and candidate.GetPrimaryDisplayNode() is vr_display):
            legend = candidate
    if legend is None:
        legend = scene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode")
        legend.SetAndObservePrimaryDisplayNode(vr_display)
        volume_node.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetTitleText(volume_node.GetName())
    legend.SetLabelFormat("%.2g")
    legend.RemoveAllViewNodeIDs()
    for view_id in view_node_ids:
        legend.AddViewNodeID(view_id)
    legend.SetVisibility(bool(view_node_ids))
    return legend
