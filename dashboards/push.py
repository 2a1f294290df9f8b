"""Upload the dashboards (and optionally the datasource) through Grafana's HTTP API.

For a Grafana that cannot mount provisioning files. Errors name the Grafana and what
to check: unreachable, token refused, or a request Grafana rejected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from dashboards import provisioning

TOKEN_ENV = "GRAFANA_TOKEN"
FOLDER_UID = "wally"


class PushError(RuntimeError):
    """Grafana could not be reached or refused the upload; the message says which."""


def read_token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.expanduser().read_text().strip()
        except OSError as e:
            raise PushError(f"--token-file {token_file}: {e.strerror}") from None
        if not token:
            raise PushError(f"--token-file {token_file} is empty: expected a Grafana API token")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise PushError(
            f"no Grafana API token: set {TOKEN_ENV} or pass --token-file "
            "(a service account token with Editor rights)"
        )
    return token


def _call(url: str, what: str, fn, *args: Any) -> Any:
    """Run one API call; turn the client's exceptions into one clear PushError."""
    try:
        return fn(*args)
    except GrafanaUnauthorizedError:
        raise PushError(
            f"Grafana at {url} refused the API token while {what} (HTTP 401): check "
            f"{TOKEN_ENV} / --token-file"
        ) from None
    except GrafanaTimeoutError:
        raise PushError(f"Grafana at {url} did not answer in time while {what}") from None
    except GrafanaException as e:
        raise PushError(f"Grafana at {url} rejected {what}: {e}") from None
    except (niquests.exceptions.RequestException, OSError) as e:
        raise PushError(f"Grafana at {url} is unreachable ({what}): {type(e).__name__}") from None


def _upsert_datasource(api: GrafanaApi, ds: Mapping[str, Any]) -> None:
    try:
        api.datasource.get_datasource_by_uid(ds["uid"])
    except GrafanaUnauthorizedError:
        raise
    except GrafanaClientError as e:
        if e.status_code != 404:
            raise
        api.datasource.create_datasource(dict(ds))
        return
    api.datasource.update_datasource_by_uid(ds["uid"], dict(ds))


def _ensure_folder(api: GrafanaApi) -> None:
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaUnauthorizedError:
        raise
    except GrafanaClientError as e:
        if e.status_code != 404:
            raise
        api.folder.create_folder(provisioning.FOLDER, uid=FOLDER_UID)


def push(
    grafana_url: str,
    token: str,
    dashboards: Mapping[str, Mapping[str, Any]],
    datasource: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
) -> list[str]:
    """Upload every dashboard into the Wally folder (overwriting); returns their URLs."""
    api = GrafanaApi.from_url(grafana_url, credential=token, timeout=timeout)
    url = grafana_url.rstrip("/")
    if datasource is not None:
        _call(url, "the datasource", _upsert_datasource, api, datasource)
    _call(url, "the folder", _ensure_folder, api)
    out = []
    for name, doc in dashboards.items():
        body = {"dashboard": {**doc, "id": None}, "folderUid": FOLDER_UID, "overwrite": True}
        answer = _call(url, f"dashboard {name}", api.dashboard.update_dashboard, body)
        out.append(url + str(answer.get("url", f"/d/{doc['uid']}")))
    return out
