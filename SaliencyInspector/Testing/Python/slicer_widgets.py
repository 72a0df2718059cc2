"""Strict stand-ins for the Qt/CTK/MRML widgets of ``Resources/UI/SaliencyInspector.ui``, ``qt.QTimer``
and an event loop, so that the module's Widget runs in tests.

Strict: each stand-in class knows only the properties, methods and signals its real class has
(Qt 5 docs, CTK and Slicer's qMRMLWidgets headers; PythonQt exposes Q_PROPERTYs as attributes and
``connect("signal(args)", slot)``); any other attribute read, written, or signal connected raises
AttributeError, so a call the real widget does not have fails the test instead of passing silently.
``loadUI`` builds them from the .ui file itself: a name missing there is missing here.
"""

from __future__ import annotations

import time
import types
import xml.etree.ElementTree as ET

# class -> (properties, methods, signals); inherited entries are merged below
_QWIDGET = ({"enabled", "toolTip", "visible", "objectName"}, {"show", "hide", "setEnabled", "setVisible", "setToolTip",
                                                               "blockSignals", "connect"}, set())
SPEC = {
    "QWidget": _QWIDGET,
    "qMRMLWidget": ({"mrmlScene"}, {"setMRMLScene"}, {"mrmlSceneChanged(vtkMRMLScene*)"}),
    "ctkCollapsibleButton": ({"collapsed", "text"}, set(), {"contentsCollapsed(bool)"}),
    "QLabel": ({"text"}, {"setText"}, set()),
    "QPushButton": ({"text", "checkable", "checked"}, {"click", "setText"}, {"clicked()", "clicked(bool)", "toggled(bool)"}),
    "QCheckBox": ({"text", "checked"}, {"setChecked", "isChecked"}, {"toggled(bool)", "stateChanged(int)", "clicked(bool)"}),
    "QLineEdit": ({"text", "placeholderText"}, {"setText"}, {"textChanged(QString)", "editingFinished()"}),
    "QProgressBar": ({"value", "minimum", "maximum", "format", "textVisible"}, {"setRange", "setValue", "reset"}, set()),
    "QComboBox": ({"currentIndex", "currentText", "count"},
                  {"addItem", "clear", "findData", "findText", "itemData", "itemText", "setCurrentIndex"},
                  {"currentIndexChanged(int)", "currentTextChanged(QString)", "activated(int)"}),
    "QListWidget": ({"count", "currentRow", "selectionMode"},
                    {"addItem", "clear", "item", "selectedItems", "setCurrentRow", "clearSelection"},
                    {"itemSelectionChanged()", "currentRowChanged(int)", "itemClicked(QListWidgetItem*)"}),
    "ctkPathLineEdit": ({"currentPath", "filters", "nameFilters"}, {"setCurrentPath", "addCurrentPathToHistory"},
                        {"currentPathChanged(QString)", "validInputChanged(bool)"}),
    "qMRMLNodeComboBox": ({"nodeTypes", "noneEnabled", "addEnabled", "removeEnabled", "currentNodeID"},
                          {"currentNode", "setCurrentNode", "setCurrentNodeID", "addAttribute", "setMRMLScene"},
                          {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)", "currentNodeIDChanged(QString)",
                           "nodeAdded(vtkMRMLNode*)"}),
    "qMRMLTableView": ({"mrmlTableNodeID"}, {"setMRMLTableNode", "mrmlTableNode"}, set()),
    "ctkSliderWidget": ({"value", "minimum", "maximum", "singleStep", "decimals"}, {"setValue", "setRange"},
                        {"valueChanged(double)", "valueIsChanging(double)"}),
}
BASES = {"qMRMLWidget": "QWidget", "ctkCollapsibleButton": "QPushButton"}


def _spec(cls: str):
    props, methods, signals = set(_QWIDGET[0]), set(_QWIDGET[1]), set(_QWIDGET[2])
    chain = [cls]
    while chain[-1] in BASES:
        chain.append(BASES[chain[-1]])
    for name in chain:
        p, m, s = SPEC[name]
        props, methods, signals = props | p, methods | m, signals | s
    return props, methods, signals


class Widget:
    """One widget of the .ui file; strict about what it offers."""

    def __init__(self, cls: str, name: str, properties: dict):
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_spec", _spec(cls))
        object.__setattr__(self, "_state", {"enabled": True, "visible": True, "toolTip": "", "objectName": name,
                                            "text": "", "currentIndex": -1, "currentPath": "", "value": 0.0})
        object.__setattr__(self, "slots", {})  # signal -> [slot]
        object.__setattr__(self, "items", [])  # combo box (text, data) / list widget items
        object.__setattr__(self, "attributes", [])
        object.__setattr__(self, "tableNode", None)
        object.__setattr__(self, "range", None)
        object.__setattr__(self, "_blocked", False)

    # ---- strictness ------------------------------------------------------------------------------
    def __getattr__(self, name):
        props, methods, _signals = self._spec
        if name in props:
            if name == "count":
                return len(self.items)
            return self._state.get(name)
        if name in methods:
            return getattr(self, "_" + name, None) or self._unimplemented(name)
        raise AttributeError(f"{self._cls} has no property or method '{name}' (the real widget does not either)")

    def __setattr__(self, name, value):
        if name not in self._spec[0]:
            raise AttributeError(f"{self._cls} has no property '{name}' (PythonQt would refuse to set it)")
        self._state[name] = value

    def _unimplemented(self, name):
        def call(*args, **kwargs):
            raise NotImplementedError(f"stand-in {self._cls}.{name} is real but not modelled; add it")
        return call

    # ---- signals -----------------------------------------------------------------------------
    def _connect(self, signal, slot):
        if signal not in self._spec[2]:
            raise AttributeError(f"{self._cls} has no signal {signal}")
        self.slots.setdefault(signal, []).append(slot)
        return True

    def emit(self, signal, *args):
        """What the user does: the signal with its arguments, unless signals are blocked."""
        if signal not in self._spec[2]:
            raise AttributeError(f"{self._cls} has no signal {signal}")
        if not self._blocked:
            for slot in self.slots.get(signal, []):
                slot(*args[:_accepted(slot, len(args))])

    # ---- modelled methods --------------------------------------------------------------------------
    def _show(self):
        self._state["visible"] = True

    def _hide(self):
        self._state["visible"] = False

    def _blockSignals(self, block):
        old = self._blocked
        object.__setattr__(self, "_blocked", bool(block))
        return old

    def _setMRMLScene(self, scene):
        self._state["mrmlScene"] = scene

    def _setRange(self, lo, hi):
        object.__setattr__(self, "range", (lo, hi))

    def _addItem(self, *args):
        if self._cls == "QListWidget":
            self.items.append(args[0])
        else:
            self.items.append((args[0], args[1] if len(args) > 1 else None))

    def _clear(self):
        self.items.clear()

    def _findData(self, data):
        return next((i for i, (_t, d) in enumerate(self.items) if d == data), -1)

    def _itemData(self, index):
        return self.items[index][1] if 0 <= index < len(self.items) else None

    def _item(self, row):
        return self.items[row]

    def _selectedItems(self):
        return [i for i in self.items if i.selected and i.flags is None]

    def _addAttribute(self, nodeType, name, value=None):
        self.attributes.append((nodeType, name, value))

    def _setMRMLTableNode(self, node):
        object.__setattr__(self, "tableNode", node)

    _connect.__name__ = "connect"


def _accepted(slot, n):
    """PythonQt calls a Python slot with as many of the signal's arguments as it takes
    (the template connects "clicked(bool)" to ``onApplyButton(self)``)."""
    import inspect

    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return n
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return n
    return min(n, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params))


class QListWidgetItem:
    """qt.QListWidgetItem: the calls the widget makes (text, setFlags, setData/data by role,
    setToolTip, setSelected), strict like the widgets."""

    __slots__ = ("text", "flags", "roles", "selected", "toolTip")

    def __init__(self, text=""):
        self.text, self.flags, self.roles, self.selected, self.toolTip = text, None, {}, False, ""

    def setFlags(self, flags):
        self.flags = flags

    def setData(self, role, value):
        self.roles[role] = value

    def data(self, role):
        return self.roles.get(role)

    def setToolTip(self, text):
        self.toolTip = text

    def setSelected(self, selected):
        self.selected = bool(selected)


def load_ui(path):
    """slicer.util.loadUI stand-in: the .ui file's widgets (root first), keyed by objectName."""
    widgets = {}
    for element in ET.parse(path).getroot().iter("widget"):
        cls, name = element.get("class"), element.get("name")
        if cls not in SPEC:
            raise AttributeError(f"no stand-in for {cls} ({name}): add its real properties, methods, signals")
        widgets[name] = Widget(cls, name, {})
    root = next(iter(widgets.values()))
    object.__setattr__(root, "children", widgets)
    return root


def child_widget_variables(root):
    """slicer.util.childWidgetVariables: a namespace of the named children."""
    return types.SimpleNamespace(**root.children)


# ---- qt.QTimer and the event loop ----------------------------------------------------------------
class EventLoop:
    """The main thread's event loop: fires due timers, measures how long each callback holds it."""

    def __init__(self):
        self.timers = []
        self.longest = 0.0  # the longest single callback (a GUI freeze), seconds
        self.ticks = 0

    def run(self, until, timeout=120.0, on_tick=None):
        end = time.monotonic() + timeout
        while not until():
            if time.monotonic() > end:
                raise TimeoutError("the event loop ran out of time")
            now = time.monotonic()
            for timer in [t for t in self.timers if t._active and t._due <= now]:
                timer._fire(self)
            if on_tick is not None:
                on_tick()
            time.sleep(0.002)


def make_qtimer(loop: EventLoop):
    class QTimer:
        """qt.QTimer (QtCore): interval property, setInterval, singleShot property, start(), start(msec),
        stop(), isActive(), connect("timeout()", slot); static singleShot(msec, callable)."""

        __slots__ = ("_interval", "_active", "_due", "_slots", "_single")

        def __init__(self, parent=None):
            self._interval, self._active, self._due, self._slots, self._single = 0, False, 0.0, [], False
            loop.timers.append(self)

        def setInterval(self, msec):
            self._interval = int(msec)

        def setSingleShot(self, single):
            self._single = bool(single)

        def isActive(self):
            return self._active

        def start(self, msec=None):
            if msec is not None:
                self._interval = int(msec)
            self._active, self._due = True, time.monotonic() + self._interval / 1000

        def stop(self):
            self._active = False

        def connect(self, signal, slot):
            if signal != "timeout()":
                raise AttributeError(f"QTimer has no signal {signal}")
            self._slots.append(slot)
            return True

        def disconnect(self, signal, slot):
            self._slots.remove(slot)
            return True

        @staticmethod
        def singleShot(msec, slot):
            timer = QTimer()
            timer._single = True
            timer.connect("timeout()", slot)
            timer.start(msec)

        def _fire(self, loop):
            if self._single:
                self._active = False
            else:
                self._due = time.monotonic() + self._interval / 1000
            for slot in list(self._slots):
                t = time.monotonic()
                slot()
                loop.longest = max(loop.longest, time.monotonic() - t)
                loop.ticks += 1

    return QTimer


# ---- slicer.parameterNodeWrapper ------------------------------------------------------------------
def parameter_node_wrapper(classtype):
    """@parameterNodeWrapper stand-in (Base/Python/slicer/parameterNodeWrapper/wrapper.py): the wrapped
    class takes the vtkMRMLScriptedModuleNode; fields typed with a vtkMRML class are node references,
    the others parameters (str, bool, float, Enum by value), with the class's defaults; connectGui /
    disconnectGui bind nothing here (the tests call the handlers) but keep their signatures."""
    import enum
    import typing

    hints = typing.get_type_hints(classtype, include_extras=True)
    fields = {name: typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
              for name, hint in hints.items()}
    defaults = {name: getattr(classtype, name) for name in fields if hasattr(classtype, name)}

    class Wrapped:
        def __init__(self, node):
            object.__setattr__(self, "parameterNode", node)
            for name, value in defaults.items():
                if not node.GetParameter(name) and node.GetNodeReference(name) is None:
                    setattr(self, name, value)

        def __getattr__(self, name):
            if name not in fields:
                raise AttributeError(f"{classtype.__name__} has no parameter '{name}'")
            node, kind = self.parameterNode, fields[name]
            if isinstance(kind, type) and kind.__name__.startswith("vtkMRML"):
                return node.GetNodeReference(name)
            text = node.GetParameter(name)
            if kind is bool:
                return text == "True"
            if kind is float:
                return float(text) if text else 0.0
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                return kind(text)
            return text

        def __setattr__(self, name, value):
            if name not in fields:
                raise AttributeError(f"{classtype.__name__} has no parameter '{name}'")
            node, kind = self.parameterNode, fields[name]
            if isinstance(kind, type) and kind.__name__.startswith("vtkMRML"):
                node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
            elif isinstance(value, enum.Enum):
                node.SetParameter(name, str(value.value))
            else:
                node.SetParameter(name, str(value))

        def AddObserver(self, event, callback, priority=0.0):  # forwarded to the node, as the real wrapper does
            return self.parameterNode.AddObserver(event, callback, priority)

        def RemoveObserver(self, tag):
            return self.parameterNode.RemoveObserver(tag)

        def connectGui(self, gui):
            return object()

        def disconnectGui(self, tag):
            pass

    Wrapped.__name__ = classtype.__name__
    return Wrapped


def install(monkeypatch, module_dir):
    """Put the widget stand-ins in place (after slicer_standins.install, before importing the module);
    returns the EventLoop that runs the QTimers."""
    import sys

    import slicer
    import slicer.util

    loop = EventLoop()
    qt = sys.modules["qt"]
    monkeypatch.setattr(qt, "QTimer", make_qtimer(loop), raising=False)
    monkeypatch.setattr(qt, "QListWidgetItem", QListWidgetItem, raising=False)
    monkeypatch.setattr(qt, "Qt", types.SimpleNamespace(WaitCursor=3, BusyCursor=16, NoItemFlags=0, UserRole=256),
                        raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", load_ui)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", child_widget_variables)
    monkeypatch.setattr(sys.modules["slicer.parameterNodeWrapper"], "parameterNodeWrapper", parameter_node_wrapper)
    base = sys.modules["slicer.ScriptedLoadableModule"].ScriptedLoadableModuleWidget

    class Layout:
        def __init__(self):
            self.widgets = []

        def addWidget(self, widget):
            self.widgets.append(widget)

        def addStretch(self, stretch=0):
            pass

    def __init__(self, parent=None):  # ScriptedLoadableModule.py: parent is the module panel
        self.parent = parent if parent is not None else types.SimpleNamespace(isEntered=True)
        self.moduleName = self.__class__.__name__.removesuffix("Widget")
        self.layout = Layout()

    def setup(self):
        pass

    def resourcePath(self, filename):
        return str(Path(module_dir) / "Resources" / filename)

    from pathlib import Path

    for name, value in (("__init__", __init__), ("setup", setup), ("resourcePath", resourcePath)):
        monkeypatch.setattr(base, name, value, raising=False)
    return loop
