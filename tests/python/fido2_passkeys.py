"""Passkeys against an independent WebAuthn implementation: Yubico's python-fido2.

python-fido2 parses the options Assent sends (the JSON an RP hands to the browser), and
builds every byte of the answers: the client data, the authenticator data with its attested
credential and COSE key, the `none` attestation object, the assertion signature, and their
JSON form (as a browser's `credential.toJSON()` gives it). Assent shares no code with it.

Usage: fido2_passkeys.py <server url> <api key>
"""

import json
import os
import sys
import urllib.error
import urllib.request
from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.webauthn import (
    Aaguid,
    AttestationObject,
    AttestedCredentialData,
    AuthenticationResponse,
    AuthenticatorAssertionResponse,
    AuthenticatorAttestationResponse,
    AuthenticatorData,
    CollectedClientData,
    PublicKeyCredentialCreationOptions,
    PublicKeyCredentialRequestOptions,
    RegistrationResponse,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

BASE, KEY = sys.argv[1], sys.argv[2]
# Development passkeys live on localhost: the origin of this server's pages.
ORIGIN = BASE.replace("127.0.0.1", "localhost")
F = AuthenticatorData.FLAG


def call(method, path, body=None):
    request = urllib.request.Request(
        BASE + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def expect(result, status):
    got, body = result
    assert got == status, f"expected {status}, got {got}: {body}"
    return body


class Authenticator:
    """A software authenticator holding discoverable credentials, built from python-fido2's types."""

    def __init__(self):
        self.credentials = {}  # credential id -> (private key, rp id, user handle, counter)

    def create(self, options: PublicKeyCredentialCreationOptions, origin: str) -> dict:
        assert options.authenticator_selection.resident_key == ResidentKeyRequirement.REQUIRED
        assert options.authenticator_selection.user_verification == UserVerificationRequirement.REQUIRED
        excluded = {c.id for c in options.exclude_credentials or []}
        assert not excluded & set(self.credentials), "an excluded credential would be reused"
        key = ec.generate_private_key(ec.SECP256R1())
        credential_id = os.urandom(32)
        rp_id = options.rp.id
        client_data = CollectedClientData.create(
            type=CollectedClientData.TYPE.CREATE, challenge=options.challenge, origin=origin
        )
        auth_data = AuthenticatorData.create(
            sha256(rp_id.encode()).digest(),
            F.UP | F.UV | F.AT,
            0,
            AttestedCredentialData.create(Aaguid.NONE, credential_id, ES256.from_cryptography_key(key.public_key())),
        )
        attestation = AttestationObject.create("none", auth_data, {})
        self.credentials[credential_id] = [key, rp_id, options.user.id, 0]
        response = RegistrationResponse(
            raw_id=credential_id,
            response=AuthenticatorAttestationResponse(client_data=client_data, attestation_object=attestation),
        )
        return dict(response)

    def get(self, options: PublicKeyCredentialRequestOptions, origin: str) -> dict:
        assert options.user_verification == UserVerificationRequirement.REQUIRED
        allowed = [c.id for c in options.allow_credentials or []]
        # Usernameless: no list, the authenticator picks one of its discoverable credentials.
        candidates = [c for c in self.credentials if not allowed or c in allowed]
        assert candidates, "no credential for this request"
        credential_id = candidates[0]
        entry = self.credentials[credential_id]
        key, rp_id, user_handle, counter = entry
        assert rp_id == options.rp_id
        entry[3] = counter + 1
        client_data = CollectedClientData.create(
            type=CollectedClientData.TYPE.GET, challenge=options.challenge, origin=origin
        )
        auth_data = AuthenticatorData.create(sha256(rp_id.encode()).digest(), F.UP | F.UV, counter + 1)
        signature = key.sign(bytes(auth_data) + client_data.hash, ec.ECDSA(hashes.SHA256()))
        response = AuthenticationResponse(
            raw_id=credential_id,
            response=AuthenticatorAssertionResponse(
                client_data=client_data, authenticator_data=auth_data, signature=signature, user_handle=user_handle
            ),
        )
        return dict(response)


def register(authenticator, user_id, origin=ORIGIN):
    started = expect(call("POST", "/v1/passkeys/registrations", {"user_id": user_id}), 201)
    options = PublicKeyCredentialCreationOptions.from_dict(started["options"]["publicKey"])
    credential = authenticator.create(options, origin)
    # The JSON crosses the wire as text, exactly as a browser's fetch would send it.
    credential = json.loads(json.dumps(credential))
    return call("POST", f"/v1/passkeys/registrations/{started['ceremony_id']}", {"credential": credential, "name": "python-fido2"})


def sign_in(authenticator, user_id=None, origin=ORIGIN):
    started = expect(call("POST", "/v1/passkeys/authentications", {"user_id": user_id} if user_id else {}), 201)
    options = PublicKeyCredentialRequestOptions.from_dict(started["options"]["publicKey"])
    assertion = json.loads(json.dumps(authenticator.get(options, origin)))
    return call("POST", f"/v1/passkeys/authentications/{started['ceremony_id']}", {"credential": assertion})


def main():
    expect(call("PUT", "/v1/users/fido-alice", {"display_name": "Alice (python-fido2)"}), 201)
    expect(call("PUT", "/v1/users/fido-bob", {"display_name": "Bob"}), 201)
    alice, bob = Authenticator(), Authenticator()

    registered = expect(register(alice, "fido-alice"), 201)
    passkey_id = registered["passkey_id"]
    expect(register(bob, "fido-bob"), 201)

    # Usernameless: the user handle python-fido2 stored says who signs in.
    done = expect(sign_in(alice), 200)
    assert done == {"user_id": "fido-alice", "passkey_id": passkey_id, "user_verified": True, "backed_up": False}, done
    # Named.
    done = expect(sign_in(alice, "fido-alice"), 200)
    assert done["passkey_id"] == passkey_id, done
    stored = expect(call("GET", f"/v1/users/fido-alice/passkeys/{passkey_id}"), 200)
    assert stored["sign_count"] == 2, stored

    # A second registration for Alice excludes her passkey; python-fido2 reads the list.
    started = expect(call("POST", "/v1/passkeys/registrations", {"user_id": "fido-alice"}), 201)
    options = PublicKeyCredentialCreationOptions.from_dict(started["options"]["publicKey"])
    assert [c.id for c in options.exclude_credentials] == list(alice.credentials), options.exclude_credentials

    # Refusals.
    problem = register(Authenticator(), "fido-alice", origin="https://phish.example.net")
    assert problem[0] == 422 and problem[1]["code"] == "origin_not_allowed", problem
    problem = sign_in(alice, origin="https://phish.example.net")
    assert problem[0] == 422 and problem[1]["code"] == "origin_not_allowed", problem
    # Bob's credential answering a sign-in started for Alice.
    started = expect(call("POST", "/v1/passkeys/authentications", {"user_id": "fido-alice"}), 201)
    options = PublicKeyCredentialRequestOptions.from_dict(started["options"]["publicKey"])
    options_for_bob = PublicKeyCredentialRequestOptions(challenge=options.challenge, rp_id=options.rp_id,
                                                        user_verification=options.user_verification)
    assertion = bob.get(options_for_bob, ORIGIN)
    problem = call("POST", f"/v1/passkeys/authentications/{started['ceremony_id']}", {"credential": assertion})
    assert problem[0] == 422 and problem[1]["code"] == "credential_not_allowed", problem

    print("python-fido2: registration, usernameless and named sign-in, and refusals all as expected")


if __name__ == "__main__":
    main()
