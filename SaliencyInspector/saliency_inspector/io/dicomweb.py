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


def read_study_ct(url: str, study: str, series: str | None = None, note=None, folder=None, **read_options):
    """Pull the study's CT series and read it: returns (Volume, DicomSource).

    The files go to ``folder``, or to a temporary folder removed once read (the Volume and the
    slice headers are in memory by then). ``read_options``: ``strict_geometry``, ``provenance`` of
    :func:`~saliency_inspector.io.volume.read_dicom_series`.
    """
    from .dicom_out import DicomSource
    from .volume import read_dicom_series

    if folder is None:
        with tempfile.TemporaryDirectory(prefix="saliency-dicomweb-") as tmp:
            return read_study_ct(url, study, series, note, tmp, **read_options)
    chosen = pull_series(url, study, folder, series)
    if note is not None:
        note(f"pulled CT series {chosen} of study {study} from {url}")
    return (read_dicom_series(folder, series=chosen, note=note, **read_options),
            DicomSource.from_folder(folder, chosen))


def series_identity(url: str, study: str, series: str | None = None, client=None) -> dict:
    """What a cohort case pulled from ``study`` is, for its resume key: the server, the study, the
    CT series chosen (as :func:`find_ct_series` chooses it) and its SOPInstanceUIDs, sorted (QIDO-RS).
    A series that gained or lost an instance gets a new identity, so the case is computed again."""
    client = client or connect(url)
    chosen = find_ct_series(client, url, study, series)
    found = _call(url, f"the instance query of series {chosen}", client.search_for_instances,
                  study_instance_uid=study, series_instance_uid=chosen, fields=["00080018"])
    return {"dicomweb": url.rstrip("/"), "study_uid": study, "series_uid": chosen,
            "instances": sorted(str(_value(i, "00080018")) for i in found)}


def check_server(url: str, client=None) -> None:
    """One QIDO-RS query (studies, limit 1): InputError at once when the server is down or refuses."""
    client = client or connect(url)
    _call(url, "a study query (QIDO-RS)", client.search_for_studies, limit=1)


def push(url: str, paths, client=None) -> list:
    """Store DICOM files in their study on the server, all in one STOW-RS request; returns their
    SOPInstanceUIDs.

    All or nothing, as far as DICOMweb allows: the objects are checked here first (readable, one
    study) so that nothing is sent when one is bad; they go in a single multipart request to
    ``/studies/{study}``, which a server parses whole before storing (a request cut off half-way
    stores nothing); and if the server still refuses some of them (a STOW-RS FailedSOPSequence), the
    ones it took are deleted again where the server offers DICOMweb DELETE (not part of the
    standard; Orthanc's plugin answers 405), else the error names them. Storing the same objects
    again (a retry) replaces them: their UIDs are fixed in the files. InputError on any failure.
    """
    import pydicom

    datasets = []
    for p in paths:
        try:
            datasets.append(pydicom.dcmread(str(p)))
        except Exception as err:  # noqa: BLE001 - any unreadable object stops the push before sending
            raise InputError(f"{p}: not a readable DICOM object ({type(err).__name__}); nothing was stored") from None
    if not datasets:
        return []
    study = _check_objects(datasets)
    client = client or connect(url)
    response = _call(url, f"storing {len(datasets)} objects (STOW-RS)", _store, client, datasets, study)
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reasons = ", ".join(f"{item.get('ReferencedSOPInstanceUID', '?')} (reason {item.get('FailureReason', '?')})"
                            for item in failed)
        stored = [ds for ds in datasets if str(ds.SOPInstanceUID) in
                  {str(i.ReferencedSOPInstanceUID) for i in response.get("ReferencedSOPSequence", [])}]
        kept = _delete(client, stored)
        left = (f"; the server kept {len(kept)} of them and does not offer DICOMweb DELETE: "
                f"{', '.join(kept)}") if kept else "; nothing was left stored"
        raise InputError(f"{url}: the DICOMweb server refused {len(failed)} of {len(datasets)} objects: {reasons}{left}")
    return [str(ds.SOPInstanceUID) for ds in datasets]


def _check_objects(datasets) -> str:
    """The one study of the objects to push; InputError (nothing sent) when one lacks its UIDs or
    they belong to several studies."""
    keywords = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    for ds in datasets:
        missing = [k for k in keywords if not str(ds.get(k, "") or "")]
        if missing:
            raise InputError(f"a DICOM object to push has no {', '.join(missing)}; nothing was stored")
    studies = sorted({str(ds.StudyInstanceUID) for ds in datasets})
    if len(studies) != 1:
        raise InputError(f"the {len(datasets)} objects belong to {len(studies)} studies ({', '.join(studies)}); "
                         "one push stores one study's objects; nothing was stored")
    return studies[0]


def _store(client, datasets, study):
    """STOW-RS of ``datasets`` into ``study``; a 409 Conflict (the server refused some objects, PS3.18
    10.5.3) comes back as its response dataset, so the caller sees which ones it took."""
    import pydicom
    import requests

    try:
        return client.store_instances(datasets, study_instance_uid=study)
    except requests.exceptions.HTTPError as err:
        if err.response is None or err.response.status_code != 409:
            raise
        try:
            return pydicom.Dataset.from_json(err.response.json())
        except ValueError:
            raise err from None


def _delete(client, datasets) -> list:
    """Delete stored objects again (non-standard DICOMweb DELETE); returns the UIDs that stay."""
    kept = []
    for ds in datasets:
        try:
            client.delete_instance(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        except Exception:  # noqa: BLE001 - a server without DELETE (405), or any refusal: report it
            kept.append(str(ds.SOPInstanceUID))
    return kept


PUSH_ATTEMPTS, PUSH_WAIT = 3, 2.0  # a cohort's push: 3 tries, 2 s then 4 s apart


def push_with_retry(url: str, paths, attempts: int | None = None, wait: float | None = None, client=None,
                    sleep=None) -> dict:
    """:func:`push`, tried up to ``attempts`` times (default :data:`PUSH_ATTEMPTS`), ``wait``,
    2×``wait``, … seconds apart (default :data:`PUSH_WAIT`).

    Returns ``{"status": "ok", "attempts": n, "objects": k, "errors": [earlier failures]}``, or
    ``{"status": "failed", ...}`` with the last error in ``"error"`` once every attempt failed
    (never raises for a server failure: a cohort reports it and goes on)."""
    import time

    sleep = sleep or time.sleep
    attempts = PUSH_ATTEMPTS if attempts is None else attempts
    wait = PUSH_WAIT if wait is None else wait
    errors = []
    for attempt in range(1, attempts + 1):
        try:
            stored = push(url, paths, client=client)
            return {"status": "ok", "attempts": attempt, "objects": len(stored), "errors": errors}
        except InputError as err:
            errors.append(str(err))
        if attempt < attempts:
            sleep(wait * 2 ** (attempt - 1))
    return {"status": "failed", "attempts": attempts, "objects": 0, "errors": errors,
            "error": f"push failed after {attempts} attempts: {errors[-1]}"}
