"""Ed25519 signature checks through the OpenSSL that Python's ``ssl`` module has loaded.

Every gateway loads ``ssl`` (MQTT over TLS, HTTPS BMCs), and with it the system's libcrypto,
which verifies Ed25519 (OpenSSL 1.1.1 and later). ``cryptography`` would do the same work
with an OpenSSL of its own: about 7 MiB more resident in every gateway, for one check per
plan (see BENCHMARKS.md, "Memory"). So the check calls that libcrypto's EVP interface
through ``ctypes``, which costs about 0.5 MiB.

The binding is used only once it has proved itself on this interpreter: at first use it
must accept RFC 8032's first test vector and refuse the same signature over another
message. Where it cannot (``ssl`` linked statically, no Ed25519 in that OpenSSL, another
library answering), ``cryptography`` checks instead: slower to load, same answers.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from typing import Any, Protocol

LOG = logging.getLogger(__name__)

KEY_BYTES = 32
SIGNATURE_BYTES = 64

# RFC 8032, section 7.1, TEST 1: the empty message.
_TEST_KEY = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
_TEST_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e"
    "39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


class Verifier(Protocol):
    def __call__(self, key: bytes, signature: bytes, data: bytes) -> bool: ...


class _LibCrypto:
    """The few EVP calls of an Ed25519 check, from the libcrypto ``_ssl`` is linked to."""

    def __init__(self, library: ctypes.CDLL) -> None:
        pointer, size = ctypes.c_void_p, ctypes.c_size_t
        self._nid = _function(library, "OBJ_sn2nid", ctypes.c_int, ctypes.c_char_p)(b"ED25519")
        if self._nid <= 0:
            raise OSError("this libcrypto knows no ED25519")
        self._new_key = _function(library, "EVP_PKEY_new_raw_public_key", pointer,
                                  ctypes.c_int, pointer, ctypes.c_char_p, size)
        self._free_key = _function(library, "EVP_PKEY_free", None, pointer)
        self._new_context = _function(library, "EVP_MD_CTX_new", pointer)
        self._free_context = _function(library, "EVP_MD_CTX_free", None, pointer)
        self._init = _function(library, "EVP_DigestVerifyInit", ctypes.c_int,
                               pointer, pointer, pointer, pointer, pointer)
        self._verify = _function(library, "EVP_DigestVerify", ctypes.c_int,
                                 pointer, ctypes.c_char_p, size, ctypes.c_char_p, size)
        self._clear_errors = _function(library, "ERR_clear_error", None)

    def __call__(self, key: bytes, signature: bytes, data: bytes) -> bool:
        if len(key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
            return False
        pkey = self._new_key(self._nid, None, key, len(key))
        context = self._new_context() if pkey else None
        try:
            if not pkey or not context or self._init(context, None, None, None, pkey) != 1:
                raise OSError("libcrypto could not set up an Ed25519 check")
            return bool(self._verify(context, signature, len(signature), data, len(data)) == 1)
        finally:
            if context:
                self._free_context(context)
            if pkey:
                self._free_key(pkey)
            # Whatever failed leaves its reason in this thread's OpenSSL error queue, which
            # the ssl module reads after its own calls: leave nothing there.
            self._clear_errors()


def _function(library: ctypes.CDLL, name: str, result: type | None,
              *arguments: type) -> Any:
    function = getattr(library, name)  # AttributeError if the library has no such symbol
    function.restype = result
    function.argtypes = list(arguments)
    return function


def _with_cryptography(key: bytes, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def _proves_itself(verify: Verifier) -> bool:
    return verify(_TEST_KEY, _TEST_SIGNATURE, b"") and \
        not verify(_TEST_KEY, _TEST_SIGNATURE, b"\x00")


def _ssl_libcrypto() -> Verifier | None:
    """The check through ``ssl``'s libcrypto, if it is there and gives the right answers."""
    try:
        import _ssl

        # Already loaded: dlopen hands back the same library, and a symbol is looked up in
        # it and in what it is linked to (libcrypto).
        verify = _LibCrypto(ctypes.CDLL(_ssl.__file__))
        if _proves_itself(verify):
            return verify
        LOG.warning("the ssl module's libcrypto gave a wrong answer on RFC 8032's test "
                    "vector; plan signatures are checked with cryptography")
    except (ImportError, AttributeError, OSError) as exc:
        LOG.info("plan signatures are checked with cryptography (the ssl module's "
                 "libcrypto cannot: %s)", exc)
    return None


@functools.cache
def verifier() -> Verifier:
    """The Ed25519 check of this process: ``ssl``'s libcrypto where it can, else
    ``cryptography``. Chosen once, at first use."""
    return _ssl_libcrypto() or _with_cryptography


def verify(key: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``data`` by the raw 32-byte public
    ``key``. A key or signature of the wrong length is no good signature."""
    return verifier()(key, signature, data)
