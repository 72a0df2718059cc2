"""Test helper: a throwaway Orthanc with its DICOMweb plugin on 127.0.0.1 (Debian packages
``orthanc`` and ``orthanc-dicomweb``; `.ci/run` installs them).

:func:`orthanc` starts one with its storage in a temporary folder, waits for ``/system`` and
stops it at the end; it skips the tests, saying why, where Orthanc or the plugin is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

# Where Debian's orthanc-dicomweb puts the plugin (`dpkg -L orthanc-dicomweb`).
PLUGIN_FOLDERS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plugin() -> str | None:
    for folder in PLUGIN_FOLDERS:
        for path in sorted(Path(folder).glob("libOrthancDicomWeb.so*")) if Path(folder).is_dir() else ():
            return str(path)
    return None


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """The DICOMweb root URL (``http://127.0.0.1:<port>/dicom-web``) of a running test Orthanc."""
    executable, plugin = shutil.which("Orthanc") or "/usr/sbin/Orthanc", _plugin()
    if not Path(executable).exists():
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    if plugin is None:
        pytest.skip("Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
    folder = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "SaliencyInspectorTest", "HttpPort": port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomServerEnabled": False,
        "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
        "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 1, "HttpTimeout": 60,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([executable, str(folder / "config.json")], stdout=log, stderr=subprocess.STDOUT,
                               cwd=folder)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/system", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (folder / "orthanc.log").read_text()[-800:]
                pytest.skip(f"Orthanc did not start (exit {process.poll()}): {tail}")
            time.sleep(0.2)
        yield f"{base}/dicom-web"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
