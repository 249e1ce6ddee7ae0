"""API keys for the Orchestrator: who is calling, and which uploads and jobs they may see.

A key is `roar_<id>_<secret>`: the id finds the stored row, and only the sha256 of the random
secret is stored, compared in constant time. ROAR_ADMIN_KEY (a Kubernetes Secret) is an admin key
that is not stored. Every upload and job belongs to the key that made it; other keys get NOT_FOUND
for it, as if it did not exist, and admin keys see everything. Without a key (allowed on loopback
under ROAR_AUTH=auto, and always under ROAR_AUTH=off) the caller is the anonymous owner "".
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orchestrator.store import ApiKey, Store
from roar.auth import KeyPolicy, bearer_key, is_loopback, key_policy, same_secret
from roar.config import Settings
from roar.errors import NotFound, Unauthenticated

log = logging.getLogger("roar.orchestrator")

KEY_PREFIX = "roar_"
_KEY_FORMAT = re.compile(r"roar_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
# The owner of what ROAR_ADMIN_KEY makes; stored key ids are 12 hex digits, so never this.
ADMIN_KEY_OWNER = "admin"
MAX_KEY_NAME_CHARS = 100


@dataclass(frozen=True)
class Caller:
    owner: str  # the key's id; "" without a key
    admin: bool = False

    def sees(self, owner: str | None) -> bool:
        """Whether this caller may see something owned by `owner` (None: it does not exist)."""
        return owner is not None and (self.admin or owner == self.owner)

    @property
    def listed_owner(self) -> str | None:
        """Whose jobs ListJobs shows: everyone's (None) to an admin."""
        return None if self.admin else self.owner


ANONYMOUS = Caller(owner="")


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(store: Store, name: str, admin: bool) -> tuple[ApiKey, str]:
    """Stores a new key; returns its row and the key itself, which exists nowhere else."""
    name = name.strip()
    if not name or len(name) > MAX_KEY_NAME_CHARS or not name.isprintable():
        raise ValueError(f"a key's name is 1 to {MAX_KEY_NAME_CHARS} printable characters")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    store.add_key(key_id, name, _sha256(secret), admin)
    row = store.get_key(key_id)
    assert row is not None
    return row, f"{KEY_PREFIX}{key_id}_{secret}"


class Authenticator:
    def __init__(self, store: Store, policy: KeyPolicy, admin_key: str = "") -> None:
        self._store = store
        self.policy = policy
        self._admin_key = admin_key

    def caller(self, metadata: Iterable[tuple[str, Any]] | None) -> Caller:
        """The caller of an RPC from its metadata; raises Unauthenticated for a missing key where
        one is required, and for a bad or revoked key wherever keys are checked."""
        if self.policy is KeyPolicy.OFF:
            return ANONYMOUS
        key = bearer_key(metadata)
        if key is None:
            if self.policy is KeyPolicy.REQUIRED:
                raise Unauthenticated(
                    "this server needs an API key: send `authorization: Bearer <key>` "
                    "(roar --key or ROAR_API_KEY; an admin makes keys with `roar keys create`)"
                )
            return ANONYMOUS
        if self._admin_key and same_secret(key, self._admin_key):
            return Caller(owner=ADMIN_KEY_OWNER, admin=True)
        match = _KEY_FORMAT.fullmatch(key)
        row = self._store.get_key(match[1]) if match else None
        # Key ids are not secret (`roar keys list` shows them); the secrets are compared in constant time.
        if row is None or row.revoked is not None or not same_secret(_sha256(match[2]), row.secret_sha256):
            raise Unauthenticated("the API key is unknown or revoked")
        return Caller(owner=row.key_id, admin=row.admin)

    def counted_owner(self, caller: Caller) -> str | None:
        """Whose jobs GetStats counts: everyone's (None) for an admin, and for anyone on a server
        without keys (every caller is anonymous there); otherwise only the caller's own."""
        keyless = self.policy is KeyPolicy.OFF or not (self._admin_key or self._store.has_active_keys())
        return None if caller.admin or keyless else caller.owner

    def check_upload(self, caller: Caller, upload_id: str) -> None:
        """NOT_FOUND unless the upload exists and the caller may see it."""
        if not caller.sees(self._store.upload_owner(upload_id)):
            raise NotFound(f"no upload {upload_id!r}")

    def check_job(self, caller: Caller, job_id: str) -> None:
        """NOT_FOUND unless the job exists and the caller may see it."""
        if not caller.sees(self._store.job_owner(job_id)):
            raise NotFound(f"no job {job_id!r}")


def authenticator(settings: Settings, store: Store, host: str) -> Authenticator:
    """The orchestrator's key policy for listening on `host`; exits where keys are required beyond
    loopback but none could be accepted."""
    policy = key_policy(settings, "orchestrator", host)
    usable = bool(settings.admin_key) or store.has_active_keys()
    if policy is KeyPolicy.REQUIRED and not usable:
        if not is_loopback(host):
            raise SystemExit(
                f"orchestrator: listening on {host} needs API keys, and there are none: set "
                "ROAR_ADMIN_KEY, or create one with `roar keys create --name NAME --admin` "
                "(or set ROAR_AUTH=off if something else keeps strangers out)"
            )
        log.warning("API keys are required but none exist yet: create one with `roar keys create`")
    return Authenticator(store, policy, settings.admin_key)
