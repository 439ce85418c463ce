"""The registry's HTTP API as the site tools use it: batches, withdrawals, the site's subject
list, the published dictionary.

Every call has a timeout; 5xx, 429 and timeouts are retried with backoff (429 and 503 honour
Retry-After); anything else that is not the expected answer fails the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

SOURCE_HEADER = "X-Registry-Source"


class RegistryFailure(Exception):
    """The registry could not take the sync's request; the message holds no value or token."""


class RegistryClient:
    """A submitter token's view of the registry."""

    def __init__(self, url: str, token: str, *, timeout: float, retries: int, backoff: float,
                 sleep: Callable[[float], None] = time.sleep, source: str = "redcap-sync"
                 ) -> None:
        self.base = url.rstrip("/") + "/api/v1"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", SOURCE_HEADER: source})

    def _request(self, method: str, path: str, ok: tuple[int, ...], **kwargs: Any
                 ) -> requests.Response:
        # Named without the subject_id: a report says which call failed, not for whom.
        what = f"{method} {path.split('?')[0]}" if not path.startswith("/records") else \
            f"{method} /records{'/batch' if path.startswith('/records/batch') else ''}"
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2 ** attempt
            try:
                response = self.session.request(method, self.base + path, timeout=self.timeout,
                                                 **kwargs)
            except (requests.Timeout, requests.ConnectionError):
                if attempt == self.retries:
                    raise RegistryFailure(f"{what}: the registry did not answer in time") \
                        from None
            else:
                if response.status_code in ok:
                    return response
                if response.status_code not in (429, 500, 502, 503, 504) \
                        or attempt == self.retries:
                    raise RegistryFailure(f"{what}: the registry answered "
                                          f"{response.status_code} {_title(response)}")
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = max(wait, float(retry_after))
            self.sleep(wait)
        raise AssertionError("unreachable")

    def submit(self, records: list[dict[str, Any]], *, dry_run: bool) -> list[dict[str, Any]]:
        """POST /records/batch: the per-record results (outcome, changes, errors)."""
        response = self._request("POST", f"/records/batch?dry_run={str(dry_run).lower()}",
                                 (200,), json={"records": records})
        body = _json(response)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list) or len(results) != len(records):
            raise RegistryFailure("POST /records/batch: the answer does not list every record")
        return results

    def withdraw(self, subject: str, *, dry_run: bool) -> bool:
        """Withdraw a record deleted at the source; False when the registry does not hold it."""
        path = f"/records/{quote(subject, safe='')}"
        if dry_run:
            return self._request("GET", path, (200, 404)).status_code == 200
        response = self._request("DELETE", path + "?reason=deleted_at_source", (204, 404))
        return response.status_code == 204

    def min_remission_days(self) -> int:
        """The registry's inclusion threshold, from its published dictionary."""
        body = _json(self._request("GET", "/dictionary", (200,)))
        try:
            return int(body["inclusion"]["min_remission_days"])
        except (KeyError, TypeError, ValueError):
            raise RegistryFailure("GET /dictionary: the answer holds no inclusion threshold"
                                  ) from None

    def subjects(self) -> set[str]:
        """Every subject_id the registry holds for this site."""
        return set(self.records())

    def records(self) -> dict[str, dict[str, Any]]:
        """Every record the registry holds for this site, by subject_id (as GET /records lists
        them: the submitted fields, the derived ones, version and times)."""
        found: dict[str, dict[str, Any]] = {}
        cursor = ""
        while True:
            query = "?limit=1000" + (f"&cursor={quote(cursor)}" if cursor else "")
            body = _json(self._request("GET", "/records" + query, (200,)))
            found.update((record["subject_id"], record) for record in body.get("records", []))
            cursor = body.get("next_cursor") or ""
            if not cursor:
                return found


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise RegistryFailure("the registry answered with a body that is not JSON") from None


def _title(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return f"({body.get('title', '')}: {body.get('detail', '')})" if isinstance(body, dict) \
        else ""
