"""schemathesis hooks for ingest's internal API (loaded by schemathesis.sh's signed run).

Signs every request as events-svc does (`shared::s2s::sign`): HMAC-SHA256 over
`METHOD|PATH?QUERY|TIMESTAMP|NONCE|hex(sha256(body))`, sent in X-Key-Id, X-Timestamp, X-Nonce and
X-Signature (base64url, no padding). The key is the first one of `S2S_SIGN_TENANT` in `S2S_KEYS`
(`keyid:tenant:base64url-secret,...`, the dev keys file). Signing happens in a `requests` auth
object, which runs after the body is serialised, so the signature covers the exact bytes sent.
"""

import base64
import hashlib
import hmac
import os
import secrets
import time

import requests
import schemathesis


def _key() -> tuple[str, bytes]:
    tenant = os.environ["S2S_SIGN_TENANT"]
    for entry in os.environ["S2S_KEYS"].split(","):
        entry = entry.strip()
        if not entry:
            continue
        key_id, key_tenant, secret = entry.split(":", 2)
        if key_tenant == tenant:
            secret = secret.rstrip("=")
            return key_id, base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    # Names the tenant, never a secret.
    raise RuntimeError(f"S2S_KEYS has no key for tenant {tenant}")


class S2sSignature(requests.auth.AuthBase):
    def __init__(self) -> None:
        self.key_id, self.secret = _key()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        timestamp = str(int(time.time()))
        nonce = secrets.token_hex(16)
        canonical = "|".join(
            [request.method, request.path_url, timestamp, nonce, hashlib.sha256(body).hexdigest()]
        )
        mac = hmac.new(self.secret, canonical.encode(), hashlib.sha256).digest()
        request.headers["X-Key-Id"] = self.key_id
        request.headers["X-Timestamp"] = timestamp
        request.headers["X-Nonce"] = nonce
        request.headers["X-Signature"] = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        return request


_SIGNATURE = S2sSignature()


@schemathesis.hook
def before_call(context, case, kwargs):
    # Each send (retries included) is signed afresh: a nonce is spent once.
    kwargs["auth"] = _SIGNATURE
