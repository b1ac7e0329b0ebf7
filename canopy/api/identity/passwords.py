"""Password hashing: argon2id for new hashes; scrypt hashes from before still verify (and are rehashed).

Every function here is CPU-heavy by design: callers run them in a thread (`asyncio.to_thread`), never
on the event loop."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_N, _R, _P = 2**14, 8, 1
# RFC 9106's second recommended option (64 MiB, 3 passes) is too slow for an api process's login rate;
# 19 MiB, 2 passes (OWASP's minimum for argon2id) costs ~30 ms per login on one core.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when the user does not exist, so that an unknown name costs what a wrong password does.
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _HASHER.hash(password)


def check_password(password: str, stored: str | None) -> bool:
    """Whether the password matches the stored hash; with no hash, the same work and False."""
    if stored is None:
        _verify_argon2(password, _DUMMY)
        return False
    if stored.startswith("scrypt$"):
        return _check_scrypt(password, stored)
    return _verify_argon2(password, stored)


def needs_rehash(stored: str) -> bool:
    """Whether a hash that just verified should be replaced by one with today's algorithm and cost."""
    if not stored.startswith("$argon2"):
        return True
    try:
        return _HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def _verify_argon2(password: str, stored: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _check_scrypt(password: str, stored: str) -> bool:
    try:
        _scheme, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=32)
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def scrypt_hash(password: str) -> str:
    """A hash in the format Canopy wrote before argon2id (for tests of the upgrade path)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
