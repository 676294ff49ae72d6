"""Plays the phone with an independent JOSE implementation (PyJWT + cryptography).

If Assent's wire format were anything but standard compact ES256 JWS, this would fail.
Usage: pyjwt_phone.py <server url> <api key>. Exits non-zero on any failure.
"""
import base64
import hashlib
import json
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

BASE, API_KEY = sys.argv[1].rstrip("/"), sys.argv[2]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def http(method, path, body=None, headers=None, raw=False):
    data = body if raw or body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method, headers=headers or {})
    if data is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
            return resp.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "null")


def rp(method, path, body=None):
    return http(method, path, body, {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})


def thumbprint(jwk: dict) -> str:
    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]}, separators=(",", ":"))
    return b64u(hashlib.sha256(canonical.encode()).digest())


key = ec.generate_private_key(ec.SECP256R1())
numbers = key.public_key().public_numbers()
device_jwk = {"kty": "EC", "crv": "P-256", "x": b64u(numbers.x.to_bytes(32, "big")), "y": b64u(numbers.y.to_bytes(32, "big"))}

# The RP creates a user and an enrollment; the "QR code" is the URI.
status, _ = rp("PUT", "/v1/users/py-user", {"display_name": "Python Phone"})
assert status in (200, 201), status
status, enrollment = rp("POST", "/v1/users/py-user/enrollments", {})
assert status == 201, (status, enrollment)
query = urllib.parse.parse_qs(urllib.parse.urlparse(enrollment["uri"]).query)
token, pinned_kid = query["token"][0], query["kid"][0]

# Enroll: proof of possession with the new key embedded in the header.
enroll = jwt.encode(
    {"token": token, "name": "PyJWT phone", "platform": "other", "push": {"provider": "none"}, "iat": int(time.time())},
    key, algorithm="ES256", headers={"typ": "assent-enroll+jwt", "jwk": device_jwk},
)
status, enrolled = http("POST", "/v1/device/enroll", enroll.encode(), {"Content-Type": "application/jose"}, raw=True)
assert status == 201, (status, enrolled)
device_id = enrolled["device_id"]
server_jwk = next(k for k in enrolled["server_keys"]["keys"] if thumbprint(k) == pinned_kid)
server_key = jwt.PyJWK(server_jwk, algorithm="ES256").key


def device(method, path, body=None):
    raw = json.dumps(body).encode() if body is not None else b""
    claims = {"htm": method, "htu": path, "iat": int(time.time()), "jti": secrets.token_urlsafe(16)}
    if raw:
        claims["bh"] = b64u(hashlib.sha256(raw).digest())
    proof = jwt.encode(claims, key, algorithm="ES256", headers={"typ": "assent-proof+jwt", "kid": device_id})
    return http(method, path, raw if raw else None, {"Authorization": f"Assent-Proof {proof}", "Content-Type": "application/json"}, raw=True)


status, created = rp("POST", "/v1/challenges", {
    "user_id": "py-user", "title": "Wire EUR 99.00", "details": [{"label": "Payee", "value": "Example Ltd"}],
    "number_matching": True,
})
assert status == 201, (status, created)
challenge_id, number = created["id"], created["number"]

status, listed = device("GET", "/v1/device/challenges")
assert status == 200 and [c["id"] for c in listed["challenges"]] == [challenge_id], (status, listed)
challenge_jws = listed["challenges"][0]["jws"]
header = jwt.get_unverified_header(challenge_jws)
assert header["alg"] == "ES256" and header["typ"] == "assent-challenge+jwt" and header["kid"] == pinned_kid, header
claims = jwt.decode(challenge_jws, server_key, algorithms=["ES256"], audience=device_id)
assert claims["jti"] == challenge_id and claims["sub"] == "py-user", claims
assert claims["details"] == [{"label": "Payee", "value": "Example Ltd"}], claims
assert number in claims["number_choices"], claims

response = jwt.encode(
    {"jti": challenge_id, "decision": "approve", "chash": b64u(hashlib.sha256(challenge_jws.encode()).digest()),
     "number": number, "uv": True, "iat": int(time.time())},
    key, algorithm="ES256", headers={"typ": "assent-response+jwt", "kid": device_id},
)
status, answered = device("POST", f"/v1/device/challenges/{challenge_id}/response", {"response": response})
assert status == 200 and answered["status"] == "approved", (status, answered)

status, result = rp("GET", f"/v1/challenges/{challenge_id}")
assert status == 200 and result["status"] == "approved", result
evidence = jwt.decode(result["evidence"]["response"], key.public_key(), algorithms=["ES256"])
assert evidence["decision"] == "approve"
print("pyjwt phone: enrolled, verified the server signature and approved", challenge_id)
