"""Label Studio's API as the connector uses it: the SDK client, retries, alloop's errors.

The API token comes only from the environment variable named by ``token_env``; it is never
logged nor stored. Unreachable server, time-outs and 5xx answers are retried with exponential
backoff, then raised as :class:`~alloop.errors.ConnectorUnavailableError` (the round waits;
the next run continues). A refused token is :class:`~alloop.errors.ConnectorAuthError`, any
other refusal :class:`~alloop.errors.ConnectorDataError` with Label Studio's own detail.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from alloop.errors import ConnectorAuthError, ConnectorDataError, ConnectorUnavailableError

logger = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["LabelStudioApi"]


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


class LabelStudioApi:
    """One Label Studio server: a lazily built SDK client and :meth:`call` with retries.

    Parameters
    ----------
    url : str
    token_env : str
        The environment variable holding the access token.
    timeout_s : float
        Per request.
    retries : int
        Retries of a transient failure (``call(retry=True)``).
    backoff_s : float
        First retry delay; doubled each time.
    """

    def __init__(self, url: str, *, token_env: str, timeout_s: float, retries: int, backoff_s: float) -> None:
        self.url = url
        self.token_env = token_env
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._sdk: Any = None

    @property
    def sdk(self) -> Any:
        """The ``label_studio_sdk.LabelStudio`` client (built on first use)."""
        if self._sdk is None:
            token = os.environ.get(self.token_env)
            if not token:
                raise ConnectorAuthError(
                    f"No Label Studio API token: set the environment variable {self.token_env} "
                    "(Account & Settings > Access Token in Label Studio). Tokens are read from the environment only."
                )
            from label_studio_sdk import LabelStudio

            # the SDK's LabelStudio.__init__ is untyped (*args, **kwargs)
            self._sdk = LabelStudio(  # type: ignore[no-untyped-call]
                base_url=self.url, api_key=token, timeout=self.timeout_s, max_retries=0
            )
        return self._sdk

    def call(self, what: str, fn: Callable[[], T], *, retry: bool = True) -> T:
        """Run one API call; retry transient failures; translate errors into ConnectorErrors.

        ``retry=False`` for calls that must not be repeated blindly (an import may have been
        applied although its answer was lost): the caller checks what exists first.
        """
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        delay = self.backoff_s
        retries = self.retries if retry else 0
        for attempt in range(retries + 1):
            try:
                return fn()
            except (httpx.TransportError, ApiError) as exc:
                status = _status(exc)
                if status in (401, 403):
                    raise ConnectorAuthError(
                        f"Label Studio at {self.url} refused the token ({status}) while trying to {what}. "
                        f"Check the environment variable {self.token_env}: it must hold a valid access "
                        "token of a user with access to the project."
                    ) from None
                transient = status is None or status >= 500 or status in (408, 429)
                if not transient:
                    body = getattr(exc, "body", None)
                    detail = body.get("detail") if isinstance(body, dict) else body
                    raise ConnectorDataError(
                        f"Label Studio answered {status} to {what}: {str(detail)[:500]}"
                    ) from exc
                reason = f"HTTP {status}" if status else type(exc).__name__
                if attempt == retries:
                    raise ConnectorUnavailableError(
                        f"Label Studio at {self.url} is unavailable ({reason}) after {attempt + 1} attempts to "
                        f"{what}. Nothing was lost: the round waits. Run `alloop run` again once the server is back."
                    ) from exc
                logger.warning("Label Studio %s (%s); retrying in %.1f s", what, reason, delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the HTTP connections (idempotent)."""
        if self._sdk is not None:
            try:
                self._sdk._client_wrapper.httpx_client.httpx_client.close()
            except AttributeError:
                pass
            self._sdk = None
