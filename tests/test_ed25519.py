"""The gateway's Ed25519 check (``edge_gateway.ed25519``): through the libcrypto the ssl
module loaded, the same answers as ``cryptography`` on good and bad signatures, and
``cryptography`` itself where that libcrypto cannot be used or answers wrongly."""

from __future__ import annotations

import logging
import os
import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_gateway import ed25519


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def cases(count: int) -> list[tuple[bytes, bytes, bytes]]:
    """(public key, signature, message) signed by ``cryptography``, messages of 0..count-1
    bytes."""
    made = []
    for size in range(count):
        key = Ed25519PrivateKey.generate()
        message = os.urandom(size)
        made.append((raw_public(key), key.sign(message), message))
    return made


@pytest.fixture
def fresh_choice():
    """The process's choice made again in the test, and again after it."""
    ed25519.verifier.cache_clear()
    yield
    ed25519.verifier.cache_clear()


def test_this_gateway_checks_with_the_ssl_module_s_libcrypto():
    assert isinstance(ed25519.verifier(), ed25519._LibCrypto)


@pytest.mark.parametrize("check", [ed25519.verifier(), ed25519._with_cryptography],
                         ids=["ssl-libcrypto", "cryptography"])
def test_good_signatures_verify_and_any_change_is_refused(check):
    rng = random.Random(7)
    for key, signature, message in cases(40):
        assert check(key, signature, message)
        flipped = bytearray(signature)
        flipped[rng.randrange(64)] ^= 1 << rng.randrange(8)
        assert not check(key, bytes(flipped), message)
        assert not check(key, signature, message + b"\x00")
        assert not check(raw_public(Ed25519PrivateKey.generate()), signature, message)


@pytest.mark.parametrize("check", [ed25519.verifier(), ed25519._with_cryptography],
                         ids=["ssl-libcrypto", "cryptography"])
def test_keys_and_signatures_of_the_wrong_length_are_refused(check):
    key, signature, message = cases(3)[2]
    assert not check(key[:31], signature, message)
    assert not check(key + b"\x00", signature, message)
    assert not check(key, signature[:63], message)
    assert not check(key, signature + b"\x00", message)
    assert not check(key, b"", message)


def test_without_the_ssl_module_s_libcrypto_cryptography_checks(fresh_choice, monkeypatch,
                                                                caplog):
    def unusable(self, library):
        raise OSError("this libcrypto knows no ED25519")

    monkeypatch.setattr(ed25519._LibCrypto, "__init__", unusable)
    with caplog.at_level(logging.INFO, logger="edge_gateway.ed25519"):
        assert ed25519.verifier() is ed25519._with_cryptography
    assert "cannot: this libcrypto knows no ED25519" in caplog.text
    key, signature, message = cases(5)[4]
    assert ed25519.verify(key, signature, message)
    assert not ed25519.verify(key, signature, message[:-1])


def test_a_libcrypto_that_answers_wrongly_is_not_used(fresh_choice, monkeypatch, caplog):
    monkeypatch.setattr(ed25519._LibCrypto, "__call__", lambda self, *args: True)
    with caplog.at_level(logging.WARNING, logger="edge_gateway.ed25519"):
        assert ed25519.verifier() is ed25519._with_cryptography
    assert "wrong answer on RFC 8032's test vector" in caplog.text
    key, signature, message = cases(2)[1]
    assert not ed25519.verify(key, bytes(64), message)
