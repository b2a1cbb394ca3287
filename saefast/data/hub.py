"""Whether the Hugging Face Hub can be asked, decided before asking it: offline by setting
(HF_HUB_OFFLINE, or HF_DATASETS_OFFLINE, which overrides it for datasets), or unreachable
(one TCP connection to its host, or to the proxy that reaches it, a few seconds at most).
Without this, a missing network costs ~25 s of the libraries' retries before the same error.
Offline, the libraries are put in their offline mode (`offline`) and answer from the local
cache at once."""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
TRUE = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub and datasets read as set


def offline_setting() -> str | None:
    """The variable that puts datasets offline (HF_DATASETS_OFFLINE when set at all, else
    HF_HUB_OFFLINE), or None."""
    name = "HF_DATASETS_OFFLINE" if "HF_DATASETS_OFFLINE" in os.environ else "HF_HUB_OFFLINE"
    return name if os.environ.get(name, "").strip().upper() in TRUE else None


def address() -> tuple[str, int]:
    """Where a request to the Hub goes first: its host (HF_ENDPOINT, a mirror, included), or
    the proxy the environment names for it."""
    url = urlsplit(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    scheme, host = url.scheme or "https", url.hostname or "huggingface.co"
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if via.hostname:
            return via.hostname, via.port or (443 if via.scheme == "https" else 80)
    return host, url.port or (443 if scheme == "https" else 80)


def reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(address(), timeout=timeout).close()
        return True
    except OSError:
        return False


def unavailable() -> str | None:
    """Why the Hub cannot be asked now ("HF_HUB_OFFLINE is set", "huggingface.co is
    unreachable"), or None when it can."""
    setting = offline_setting()
    if setting:
        return f"{setting} is set"
    if not reachable():
        return f"{address()[0]} is unreachable"
    return None


@contextmanager
def offline() -> Iterator[None]:
    """huggingface_hub and datasets in offline mode while inside. They read their flags when
    first imported, so the flags are set on their modules, and put back after."""
    import huggingface_hub.constants as hub_constants

    flags = [(hub_constants, "HF_HUB_OFFLINE")]
    try:
        import datasets.config as datasets_config

        flags += [(datasets_config, "HF_HUB_OFFLINE"), (datasets_config, "HF_DATASETS_OFFLINE")]
    except ImportError:
        pass
    old = [(module, name, getattr(module, name)) for module, name in flags if hasattr(module, name)]
    for module, name, _ in old:
        setattr(module, name, True)
    try:
        yield
    finally:
        for module, name, value in old:
            setattr(module, name, value)
