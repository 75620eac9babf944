"""Stable identities: the hash that names a run, a trained model and every cache derived from them."""

from __future__ import annotations

import hashlib
import json


def stable_hash(identity: dict) -> str:
    """16 hex digits of the SHA-256 of `identity` as canonical JSON (key order does not matter)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
