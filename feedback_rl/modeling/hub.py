"""Reaching the Hugging Face hub: know at once (one request, 1.5 s at most) that it cannot be reached, and say so.

Left alone, the hub libraries retry an unreachable hub for tens of seconds ("Retrying in 1s") before a
multi-line error. Model and dataset ids ask here first; with the hub out of reach a cached copy is still used.
"""
from __future__ import annotations

import functools
import os
import re
import sys
import urllib.error
import urllib.request

from feedback_rl.errors import UserError

# the settings each library reads: transformers for models, datasets for datasets, both HF_HUB_OFFLINE
OFFLINE_VARS = {"model": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"),
                "dataset": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
PROBE_TIMEOUT_S = 1.5
# the hub's own rule (huggingface_hub.utils.validate_repo_id): [namespace/]name of word characters, '-', '.'
HUB_ID = re.compile(r"^(?:[\w.-]{1,96}/)?[\w.-]{1,96}$")


def offline_reason(kind: str = "model") -> str | None:
    """Why the hub cannot be used now for a model or a dataset (an offline setting, or no network), or None."""
    for var in OFFLINE_VARS[kind]:
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return f"{var}={os.environ[var]} is set"
    proxies = tuple(sorted(urllib.request.getproxies().items()))   # the hub client uses them too
    return _probe(os.environ.get("HF_ENDPOINT") or "https://huggingface.co", proxies)


@functools.cache
def _probe(endpoint: str, proxies: tuple) -> str | None:
    """One HEAD request, no retries: any HTTP answer means the hub is reachable."""
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", e)
        why = "timed out" if isinstance(why, TimeoutError) else getattr(why, "strerror", None) or str(why)
        return f"no network: {endpoint} cannot be reached: {why}"
    return None


def use_cache_only() -> None:
    """From now on the hub libraries read only their local cache, without trying the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True


def require_model(repo_id: str, key: str = "model.path", filename: str | None = None) -> None:
    """A hub model id can load: the hub answers, or it cannot be reached and the cache holds the model (then
    the hub libraries read only the cache); otherwise a one-line :class:`UserError`, at once."""
    if not HUB_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise UserError(f"{key}: '{repo_id}' is no local file or folder, nor a hub id (namespace/name)")
    reason = offline_reason()
    if reason is None:
        return
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache(repo_id, filename or "config.json"), str):
        use_cache_only()
        return
    raise UserError(f"{key}: '{repo_id}' is no local path and not in the Hugging Face cache, and the hub cannot "
                    f"be reached ({reason}); point it at a local model folder or .gguf file")
