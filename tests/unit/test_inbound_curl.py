"""The console's ready-to-paste curl calls: run in bash (curl replaced by a function that
prints its arguments), each must carry what its verify mode checks."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time

import pytest
from multidict import CIMultiDict

from services.api.console.inbound_forms import EXAMPLE_BODY, curl_example
from shared.core.errors import Unauthorized
from shared.core.inbound import verify_call
from shared.core.signing import generate_secret

URL = "https://hooks.example.com/hooks/in/ih_abc'def"
PRINT_ARGS = 'curl() { for a in "$@"; do printf \'%s\\n\' "$a"; done; }\n'


def _run(script: str, secret: str) -> tuple[list[str], CIMultiDict[str], bytes]:
    done = subprocess.run(
        ["bash", "-c", PRINT_ARGS + script],
        env={"SECRET": secret, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    args = done.stdout.splitlines()
    pairs = [a.split(": ", 1) for i, a in enumerate(args) if i and args[i - 1] == "-H"]
    headers = CIMultiDict((name, value) for name, value in pairs)
    return args, headers, args[args.index("-d") + 1].encode()


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
@pytest.mark.parametrize("mode", ["secret_header", "github", "standard", "none"])
def test_each_example_passes_its_verification(mode: str) -> None:
    secret = generate_secret(secrets.token_bytes(32))
    script = curl_example(URL, mode)
    assert secret not in script and ("SECRET" in script) == (mode != "none")
    args, headers, body = _run(script, secret)
    assert args[:3] == ["-X", "POST", URL]  # the URL survives shell quoting
    assert body == EXAMPLE_BODY.encode() and headers["Content-Type"] == "application/json"
    verify_call(mode, secret, headers, body, now=time.time())  # raises if it would be refused
    if mode != "none":  # and it is the secret that makes it pass
        with pytest.raises(Unauthorized):
            verify_call(mode, "whsec_" + "A" * 43 + "=", headers, body, now=time.time())
