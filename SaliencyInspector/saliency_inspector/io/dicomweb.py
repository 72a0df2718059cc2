"""A CT series from a DICOMweb server (QIDO-RS, WADO-RS) and results back to it (STOW-RS).

Uses ``dicomweb-client`` (optional extra ``dicom``; Slicer ships 0.61.0), never hand-written HTTP.
The pulled series goes into a folder and is read by the same reader as a local DICOM folder
(:func:`~saliency_inspector.io.volume.read_dicom_series`).

Credentials come only from the environment, never from the command line:
``SALIENCY_DICOMWEB_TOKEN`` (sent as ``Authorization: Bearer <token>``) or
``SALIENCY_DICOMWEB_USER`` + ``SALIENCY_DICOMWEB_PASSWORD`` (HTTP basic auth).
Every failure (server down, HTTP 4xx/5xx, unknown study, no CT series) is an :class:`InputError`
with one line naming the server and what went wrong.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ..errors import InputError

TOKEN_VARIABLE = "SALIENCY_DICOMWEB_TOKEN"
USER_VARIABLE, PASSWORD_VARIABLE = "SALIENCY_DICOMWEB_USER", "SALIENCY_DICOMWEB_PASSWORD"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def connect(url: str, timeout: float = 30.0):
    """A ``dicomweb_client.DICOMwebClient`` for ``url`` with the credentials from the environment."""
    try:
        from dicomweb_client.api import DICOMwebClient
        from dicomweb_client.session_utils import create_session, create_session_from_user_pass
    except ImportError:
        raise InputError("DICOMweb needs dicomweb-client: pip install 'saliency-inspector[dicom]' "
                         "(Slicer ships it)") from None
    headers = {}
    if os.environ.get(TOKEN_VARIABLE):
        headers["Authorization"] = f"Bearer {os.environ[TOKEN_VARIABLE]}"
    if os.environ.get(USER_VARIABLE):
        session = create_session_from_user_pass(os.environ[USER_VARIABLE], os.environ.get(PASSWORD_VARIABLE, ""))
    else:
        session = create_session()
    client = DICOMwebClient(url.rstrip("/"), session=session, headers=headers or None, timeout=timeout)
    # dicomweb-client retries every failed request 5 times with back-off (30 s when the server is
    # down); 3 tries 0.5 s and 1 s apart still ride out a busy server (429/503) and fail fast.
    client.set_http_retry_params(max_attempts=3, wait_exponential_multiplier=250)
    return client


def _call(url: str, what: str, function, *args, **kwargs):
    """``function(*args, **kwargs)`` with every network or HTTP failure as a one-line InputError."""
    import requests

    try:
        return function(*args, **kwargs)
    except requests.exceptions.HTTPError as err:
        response = err.response
        status = f"{response.status_code} {response.reason}" if response is not None else str(err)
        raise InputError(f"{url}: the DICOMweb server answered {status} to {what}") from None
    except requests.exceptions.ConnectionError:
        raise InputError(f"{url}: the DICOMweb server does not answer ({what}); check the URL and that "
                         "the server is running") from None
    except requests.exceptions.RequestException as err:
        raise InputError(f"{url}: {what} failed ({type(err).__name__})") from None


def _check_uid(value: str, option: str) -> None:
    if not _UID.match(value or "") or len(value) > 64:
        raise InputError(f"{option} {value!r}: not a DICOM UID (digits and dots, at most 64 characters)")


def _value(dataset: dict, tag: str, default=None):
    """A value of a DICOM JSON dataset (as QIDO-RS returns it)."""
    values = dataset.get(tag, {}).get("Value") or [default]
    return values[0]


def find_ct_series(client, url: str, study: str, series: str | None = None) -> str:
    """The SeriesInstanceUID to pull: ``series`` if the study has it, else the study's CT series with
    the most instances (QIDO-RS). InputError when the study is unknown or has no CT series."""
    _check_uid(study, "--study")
    if series is not None:
        _check_uid(series, "--series")
    found = _call(url, f"the series query of study {study}", client.search_for_series,
                  study_instance_uid=study, fields=["00201209"])
    if not found:
        raise InputError(f"--study {study}: no such study on {url} (the server has no series for it)")
    listing = {_value(s, "0020000E"): (_value(s, "00080060", "?"), int(_value(s, "00201209", 0) or 0)) for s in found}
    described = ", ".join(f"{uid} ({m}, {n} instances)" for uid, (m, n) in listing.items())
    if series is not None:
        if series not in listing:
            raise InputError(f"--series {series}: not in study {study} on {url}; its series are: {described}")
        return series
    ct = [uid for uid, (modality, _) in listing.items() if str(modality).upper() == "CT"]
    if not ct:
        raise InputError(f"--study {study}: no CT series in this study on {url} (found {described})")
    return max(ct, key=lambda uid: listing[uid][1])


def pull_series(url: str, study: str, folder, series: str | None = None, client=None) -> str:
    """Fetch one CT series of ``study`` (WADO-RS) into ``folder`` as one file per instance.

    ``series``: a SeriesInstanceUID, default the study's CT series with the most instances.
    Returns the SeriesInstanceUID pulled.
    """
    client = client or connect(url)
    chosen = find_ct_series(client, url, study, series)
    instances = _call(url, f"the retrieval of series {chosen}", client.retrieve_series,
                      study_instance_uid=study, series_instance_uid=chosen)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for ds in instances:
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return chosen


def read_study_ct(url: str, study: str, series: str | None = None, note=None, folder=None):
    """Pull the study's CT series and read it: returns (Volume, DicomSource).

    The files go to ``folder``, or to a temporary folder removed once read (the Volume and the
    slice headers are in memory by then).
    """
    from .dicom_out import DicomSource
    from .volume import read_dicom_series

    if folder is None:
        with tempfile.TemporaryDirectory(prefix="saliency-dicomweb-") as tmp:
            return read_study_ct(url, study, series, note, tmp)
    chosen = pull_series(url, study, folder, series)
    if note is not None:
        note(f"pulled CT series {chosen} of study {study} from {url}")
    return read_dicom_series(folder, series=chosen, note=note), DicomSource.from_folder(folder, chosen)


def push(url: str, paths, client=None) -> list:
    """Store DICOM files on the server (STOW-RS); returns their SOPInstanceUIDs.

    InputError when the server refuses any of them (a STOW-RS FailedSOPSequence or an HTTP error).
    """
    import pydicom

    client = client or connect(url)
    datasets = [pydicom.dcmread(str(p)) for p in paths]
    if not datasets:
        return []
    response = _call(url, f"storing {len(datasets)} objects (STOW-RS)", client.store_instances, datasets)
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reasons = ", ".join(f"{item.get('ReferencedSOPInstanceUID', '?')} (reason {item.get('FailureReason', '?')})"
                            for item in failed)
        raise InputError(f"{url}: the DICOMweb server refused {len(failed)} of {len(datasets)} objects: {reasons}")
    return [str(ds.SOPInstanceUID) for ds in datasets]
