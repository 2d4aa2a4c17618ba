"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with HOOKLINE_SECRET_KEY."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


def validate_key(key: str) -> None:
    """Raises ValueError unless `key` is a Fernet key (url-safe base64 of 32 bytes)."""
    try:
        Fernet(key.encode())
    except (ValueError, TypeError):
        raise ValueError(
            "must be a url-safe base64 key of 32 bytes "
            "(make one: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')"
        ) from None


class SecretBox:
    """Encrypts webhook secrets for PostgreSQL and Kafka; decrypts them only to sign."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def open(self, sealed: bytes | bytearray | memoryview) -> str:
        try:
            return self._fernet.decrypt(bytes(sealed)).decode()
        except InvalidToken:
            raise ValueError("secret cannot be decrypted with HOOKLINE_SECRET_KEY") from None

    def __repr__(self) -> str:  # never show key material
        return "SecretBox(<hidden>)"


class OpenedSecrets:
    """Each sealed secret opened once: for the processes that open the same few on every
    message or call (the sender signing, the inbound edge verifying), where Fernet's
    HMAC and AES showed in the profiles. A rotation seals a new secret, which is a new
    entry here; the whole cache is emptied when it reaches `size` entries."""

    def __init__(self, box: SecretBox, size: int = 50_000) -> None:
        self._box = box
        self._size = size
        self._opened: dict[bytes, str] = {}

    def open(self, sealed: bytes | bytearray | memoryview) -> str:
        """`SecretBox.open`, remembered (ValueError if `sealed` cannot be opened)."""
        sealed = bytes(sealed)
        secret = self._opened.get(sealed)
        if secret is None:
            secret = self._box.open(sealed)
            if len(self._opened) >= self._size:
                self._opened.clear()
            self._opened[sealed] = secret
        return secret

    def __repr__(self) -> str:  # never show what it holds
        return f"OpenedSecrets(<{len(self._opened)} hidden>)"
