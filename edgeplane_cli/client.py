"""A thin client for the Edgeplane HTTPS API."""

from __future__ import annotations

from typing import Any

import requests

from edgeplane_cli.config import Context


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"API error {status}: {message}" if status else message)
        self.status = status
        self.message = message


class ApiClient:
    def __init__(self, context: Context, timeout: float = 30.0) -> None:
        self.base = context.api_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {context.token}"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self.session.request(method, self.base + path, json=body,
                                            timeout=self.timeout)
        except requests.RequestException as exc:
            raise ApiError(0, f"cannot reach the API at {self.base}: "
                              f"{type(exc).__name__}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            message = (data or {}).get("error", {}).get("message") if isinstance(data, dict) \
                else None
            raise ApiError(response.status_code, message or response.text[:200])
        return data

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)
