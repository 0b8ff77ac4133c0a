"""The official Azure SDK for Python against kv-emulator over HTTPS (started by run.sh).

Every test uses the SDK unchanged; the only options are the ones a localhost endpoint needs:
verify_challenge_resource=False (host 127.0.0.1 is not *.vault.azure.net), connection_verify=<CA file>,
and disable_instance_discovery=True for Entra credentials pointed at a non-Microsoft authority.
"""

import hashlib
import os
import secrets
import time
import uuid

import jwt
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.identity import (
    ClientAssertionCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyCurveName, KeyType
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

URL = os.environ["KV_URL"]
AUTHORITY = os.environ["KV_AUTHORITY"]
TENANT = os.environ["KV_TENANT_ID"]
CLIENT_ID = os.environ["KV_CLIENT_ID"]
CLIENT_SECRET = os.environ["KV_CLIENT_SECRET"]
IMDS = os.environ["KV_IMDS_AUTHORITY"]
IDENTITY_ENDPOINT = os.environ["KV_IDENTITY_ENDPOINT"]
IDENTITY_HEADER = os.environ["KV_IDENTITY_HEADER"]
CA = os.environ["KV_CA_FILE"]
API_VERSION = "2025-07-01"
SCOPE = "https://vault.azure.net/.default"

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def secret_credential():
    return ClientSecretCredential(
        TENANT,
        CLIENT_ID,
        CLIENT_SECRET,
        authority=AUTHORITY,
        disable_instance_discovery=True,
        connection_verify=CA,
    )


def key_client(credential=None, **kwargs):
    return KeyClient(
        URL,
        credential or secret_credential(),
        verify_challenge_resource=False,
        connection_verify=CA,
        api_version=kwargs.pop("api_version", API_VERSION),
        **kwargs,
    )


def crypto_client(key, credential=None):
    return CryptographyClient(
        key,
        credential or secret_credential(),
        verify_challenge_resource=False,
        connection_verify=CA,
        api_version=API_VERSION,
    )


@pytest.fixture
def client():
    # One credential per test: a test that revokes tokens must not poison the others.
    return key_client()


@pytest.fixture(autouse=True)
def clean_identity_env(monkeypatch):
    for var in (
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "IMDS_ENDPOINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)


# ---- keys -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", [KeyCurveName.p_256, KeyCurveName.p_256_k])
def test_create_ec_hsm_key_on_both_curves(client, curve):
    name = unique("create")
    key = client.create_ec_key(name, curve=curve, hardware_protected=True, tags={"role": "baking"})
    assert key.key_type == KeyType.ec_hsm
    assert key.key.crv == curve
    assert len(key.key.x) == 32 and len(key.key.y) == 32
    assert key.id.startswith(f"{URL}/keys/{name}/")
    assert len(key.properties.version) == 32
    assert all(c in "0123456789abcdef" for c in key.properties.version)
    assert key.properties.enabled is True
    assert key.properties.tags == {"role": "baking"}
    assert key.properties.recovery_level == "Recoverable+Purgeable"
    assert sorted(key.key_operations) == ["sign", "verify"]


def test_software_ec_key_reports_kty_ec(client):
    key = client.create_ec_key(unique("soft"), curve=KeyCurveName.p_256)
    assert key.key_type == KeyType.ec


def test_import_key_and_get_latest_and_specific_version(client):
    name = unique("import")
    private = ec.generate_private_key(ec.SECP256K1())
    numbers = private.private_numbers()
    jwk = JsonWebKey(
        kty=KeyType.ec_hsm,
        crv=KeyCurveName.p_256_k,
        d=numbers.private_value.to_bytes(32, "big"),
        x=numbers.public_numbers.x.to_bytes(32, "big"),
        y=numbers.public_numbers.y.to_bytes(32, "big"),
        key_ops=["sign", "verify"],
    )
    first = client.import_key(name, jwk, hardware_protected=True)
    assert first.key_type == KeyType.ec_hsm
    assert first.key.x == numbers.public_numbers.x.to_bytes(32, "big")
    assert first.key.d is None  # private material never comes back

    second = client.import_key(name, jwk, hardware_protected=True)
    assert second.properties.version != first.properties.version
    assert client.get_key(name).properties.version == second.properties.version
    assert client.get_key(name, first.properties.version).id == first.id


def test_list_keys_and_versions_page_with_next_link(client):
    prefix = unique("page")
    names = [f"{prefix}-{i}" for i in range(3)]
    for n in names:
        client.create_ec_key(n, curve=KeyCurveName.p_256)
    for _ in range(2):
        client.create_ec_key(names[0], curve=KeyCurveName.p_256)

    pages = list(client.list_properties_of_keys(max_page_size=2).by_page())
    assert len(pages) >= 2
    listed = [p.name for page in pages for p in page]
    assert set(names) <= set(listed)
    assert len(listed) == len(set(listed))

    version_pages = list(client.list_properties_of_key_versions(names[0], max_page_size=1).by_page())
    versions = [p.version for page in version_pages for p in page]
    assert len(version_pages) == 3
    assert len(set(versions)) == 3


@pytest.mark.parametrize(
    "curve,alg,hash_curve",
    [
        (KeyCurveName.p_256, SignatureAlgorithm.es256, ec.SECP256R1()),
        (KeyCurveName.p_256_k, SignatureAlgorithm.es256_k, ec.SECP256K1()),
    ],
)
def test_sign_remote_and_verify_locally_with_the_sdk(client, curve, alg, hash_curve):
    key = client.create_ec_key(unique("sign"), curve=curve, hardware_protected=True)
    digest = hashlib.sha256(b"tezos block header").digest()
    crypto = crypto_client(key.id)

    result = crypto.sign(alg, digest)
    assert result.key_id == key.id
    assert len(result.signature) == 64
    again = crypto.sign(alg, digest)
    assert again.signature != result.signature  # randomised ECDSA, not RFC 6979

    # The SDK's local verifier (from the JWK the emulator returned) accepts the raw r||s signature.
    local = CryptographyClient.from_jwk(key.key)
    assert local.verify(alg, digest, result.signature).is_valid
    assert not local.verify(alg, hashlib.sha256(b"other").digest(), result.signature).is_valid
    # The client built from the key id fetches the key and verifies locally too.
    assert crypto.verify(alg, digest, again.signature).is_valid


def test_remote_verify_through_the_sdk_pipeline(client):
    key = client.create_ec_key(unique("verify"), curve=KeyCurveName.p_256_k, hardware_protected=True)
    digest = hashlib.sha256(b"payload").digest()
    sig = crypto_client(key.id).sign(SignatureAlgorithm.es256_k, digest).signature

    def remote_verify(signature):
        import base64

        b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
        request = HttpRequest(
            "POST",
            f"{key.id}/verify",
            params={"api-version": API_VERSION},
            json={"alg": "ES256K", "digest": b64(digest), "value": b64(signature)},
        )
        response = client.send_request(request)
        response.raise_for_status()
        return response.json()["value"]

    assert remote_verify(sig) is True
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    flipped = r.to_bytes(32, "big") + (SECP256K1_N - s).to_bytes(32, "big")
    assert remote_verify(flipped) is True  # Azure does not insist on low-S
    assert remote_verify(bytes(64)) is False


def test_backup_delete_purge_restore_round_trip(client):
    name = unique("backup")
    key = client.create_ec_key(name, curve=KeyCurveName.p_256_k, hardware_protected=True)
    blob = client.backup_key(name)
    assert isinstance(blob, bytes) and len(blob) > 32

    deleted = client.begin_delete_key(name).result()
    assert deleted.recovery_id.endswith(f"/deletedkeys/{name}")
    assert deleted.deleted_date is not None
    with pytest.raises(ResourceNotFoundError):
        client.get_key(name)
    with pytest.raises(ResourceExistsError):
        client.create_ec_key(name, curve=KeyCurveName.p_256_k)
    client.purge_deleted_key(name)

    restored = client.restore_key_backup(blob)
    assert restored.id == key.id
    assert restored.key.x == key.key.x
    with pytest.raises(ResourceExistsError):
        client.restore_key_backup(blob)


def test_delete_then_recover(client):
    name = unique("recover")
    client.create_ec_key(name, curve=KeyCurveName.p_256)
    client.begin_delete_key(name).wait()
    assert client.get_deleted_key(name).name == name
    assert name in [k.name for k in client.list_deleted_keys()]
    recovered = client.begin_recover_deleted_key(name).result()
    assert recovered.name == name
    assert client.get_key(name).name == name


def test_disable_key_refuses_sign_and_reenable(client):
    name = unique("disable")
    key = client.create_ec_key(name, curve=KeyCurveName.p_256_k, hardware_protected=True)
    props = client.update_key_properties(name, enabled=False)
    assert props.properties.enabled is False
    crypto = crypto_client(key.id)
    with pytest.raises(HttpResponseError) as err:
        crypto.sign(SignatureAlgorithm.es256_k, bytes(32))
    assert err.value.status_code == 403
    assert err.value.error.code == "Forbidden"
    client.update_key_properties(name, enabled=True)
    assert len(crypto.sign(SignatureAlgorithm.es256_k, bytes(32)).signature) == 64


def test_expired_key_refuses_sign(client):
    from datetime import datetime, timedelta, timezone

    name = unique("expired")
    key = client.create_ec_key(
        name, curve=KeyCurveName.p_256, expires_on=datetime.now(timezone.utc) - timedelta(minutes=1)
    )
    assert key.properties.expires_on is not None
    with pytest.raises(HttpResponseError) as err:
        crypto_client(key.id).sign(SignatureAlgorithm.es256, bytes(32))
    assert err.value.status_code == 403


# ---- error cases ------------------------------------------------------------------------------------------------


def test_unknown_key_is_key_not_found(client):
    with pytest.raises(ResourceNotFoundError) as err:
        client.get_key(unique("missing"))
    assert err.value.error.code == "KeyNotFound"


def test_wrong_digest_length_is_bad_parameter(client):
    key = client.create_ec_key(unique("digest"), curve=KeyCurveName.p_256)
    with pytest.raises(HttpResponseError) as err:
        crypto_client(key.id).sign(SignatureAlgorithm.es256, bytes(31))
    assert err.value.status_code == 400
    assert err.value.error.code == "BadParameter"
    assert "requires 32 bytes" in err.value.error.message


def test_algorithm_must_match_curve(client):
    key = client.create_ec_key(unique("alg"), curve=KeyCurveName.p_256_k)
    with pytest.raises(HttpResponseError) as err:
        crypto_client(key.id).sign(SignatureAlgorithm.es256, bytes(32))
    assert err.value.status_code == 400
    assert err.value.error.code == "BadParameter"


def test_unknown_api_version_is_rejected():
    unknown = key_client(api_version="7.7")
    with pytest.raises(HttpResponseError) as err:
        unknown.get_key(unique("any"))
    assert err.value.status_code == 400
    assert err.value.error.code == "BadParameter"
    assert "(7.7) is not recognized" in err.value.error.message


def test_api_version_7_0_still_works(client):
    # Older clients (the node.js signer, signatory) pin 7.0, which Key Vault still answers.
    name = unique("v70")
    created = client.create_ec_key(name, curve=KeyCurveName.p_256_k)
    old = key_client(api_version="7.0")
    assert old.get_key(name).id == created.id


def test_foreign_token_is_unauthorized():
    class Forged:
        def get_token(self, *scopes, **kwargs):
            token = jwt.encode({"aud": "https://vault.azure.net", "tid": TENANT}, secrets.token_bytes(32), algorithm="HS256")
            return AccessToken(token, int(time.time()) + 3600)

    with pytest.raises(ClientAuthenticationError) as err:
        key_client(Forged()).get_key(unique("any"))
    assert err.value.status_code == 401


def test_wrong_client_secret_is_refused_by_entra():
    cred = ClientSecretCredential(
        TENANT, CLIENT_ID, "wrong", authority=AUTHORITY, disable_instance_discovery=True, connection_verify=CA
    )
    with pytest.raises(ClientAuthenticationError) as err:
        cred.get_token(SCOPE)
    assert "AADSTS7000215" in str(err.value)


# ---- credentials ------------------------------------------------------------------------------------------------


def test_client_secret_credential_token_works_on_the_vault():
    cred = secret_credential()
    token = cred.get_token(SCOPE)
    assert token.expires_on > time.time() + 3000
    key = key_client(cred).create_ec_key(unique("sp"), curve=KeyCurveName.p_256)
    assert key.name.startswith("sp-")


def test_managed_identity_via_imds(monkeypatch):
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", IMDS)
    cred = ManagedIdentityCredential()
    token = cred.get_token(SCOPE)
    assert token.expires_on > time.time() + 3000
    key = key_client(cred).create_ec_key(unique("imds"), curve=KeyCurveName.p_256_k)
    assert len(crypto_client(key.id, cred).sign(SignatureAlgorithm.es256_k, bytes(32)).signature) == 64


def test_managed_identity_via_imds_with_unknown_client_id_is_unavailable(monkeypatch):
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", IMDS)
    cred = ManagedIdentityCredential(client_id=str(uuid.uuid4()))
    with pytest.raises(ClientAuthenticationError):
        cred.get_token(SCOPE)


def test_managed_identity_via_app_service_endpoint(monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", IDENTITY_ENDPOINT)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    cred = ManagedIdentityCredential()
    token = cred.get_token(SCOPE)
    assert token.expires_on > time.time() + 3000
    assert key_client(cred).create_ec_key(unique("appsvc"), curve=KeyCurveName.p_256).key_type == KeyType.ec


def test_app_service_endpoint_with_wrong_header_is_refused(monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", IDENTITY_ENDPOINT)
    monkeypatch.setenv("IDENTITY_HEADER", "wrong-header")
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential().get_token(SCOPE)


def federated_jwt():
    now = int(time.time())
    claims = {
        "iss": "https://oidc.example.invalid",
        "sub": "system:serviceaccount:tezos:tzkms",
        "aud": "api://AzureADTokenExchange",
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, secrets.token_bytes(32), algorithm="HS256")


def test_client_assertion_credential():
    cred = ClientAssertionCredential(
        TENANT,
        CLIENT_ID,
        federated_jwt,
        authority=AUTHORITY,
        disable_instance_discovery=True,
        connection_verify=CA,
    )
    assert key_client(cred).create_ec_key(unique("assert"), curve=KeyCurveName.p_256).name.startswith("assert-")


def test_workload_identity_credential_with_token_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(federated_jwt())
    cred = WorkloadIdentityCredential(
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        token_file_path=str(token_file),
        authority=AUTHORITY,
        disable_instance_discovery=True,
        connection_verify=CA,
    )
    assert cred.get_token(SCOPE).token.count(".") == 2


# ---- Managed HSM flavour ----------------------------------------------------------------------------------------

HSM_URL = os.environ["KV_HSM_URL"]
HSM_AUTHORITY = os.environ["KV_HSM_AUTHORITY"]
HSM_CA = os.environ["KV_HSM_CA_FILE"]


def hsm_credential():
    return ClientSecretCredential(
        TENANT, CLIENT_ID, CLIENT_SECRET, authority=HSM_AUTHORITY, disable_instance_discovery=True, connection_verify=HSM_CA
    )


def test_managed_hsm_challenge_names_the_hsm_resource():
    import requests

    response = requests.get(f"{HSM_URL}/keys", params={"api-version": API_VERSION}, verify=HSM_CA)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.windows.net/{TENANT}", resource="https://managedhsm.azure.net"'
    )
    assert response.json()["error"]["code"] == "Unauthorized"


def test_managed_hsm_keys_sign_and_random_bytes_through_the_sdk():
    cred = hsm_credential()
    hsm = KeyClient(HSM_URL, cred, verify_challenge_resource=False, connection_verify=HSM_CA, api_version=API_VERSION)
    key = hsm.create_ec_key(unique("hsm"), curve=KeyCurveName.p_256_k, hardware_protected=True)
    assert key.key_type == KeyType.ec_hsm
    assert key.id.startswith(f"{HSM_URL}/keys/")
    crypto = CryptographyClient(
        key.id, cred, verify_challenge_resource=False, connection_verify=HSM_CA, api_version=API_VERSION
    )
    digest = hashlib.sha256(b"hsm").digest()
    signature = crypto.sign(SignatureAlgorithm.es256_k, digest).signature
    assert CryptographyClient.from_jwk(key.key).verify(SignatureAlgorithm.es256_k, digest, signature).is_valid
    assert len(hsm.get_random_bytes(16)) == 16
    # The HSM only takes HSM keys.
    with pytest.raises(HttpResponseError) as err:
        hsm.create_ec_key(unique("soft"), curve=KeyCurveName.p_256)
    assert err.value.status_code == 400


def test_vault_token_is_refused_by_the_managed_hsm():
    class VaultAudience:
        def __init__(self):
            self.inner = hsm_credential()  # same issuer as the HSM, but the vault audience

        def get_token(self, *scopes, **kwargs):
            return self.inner.get_token(SCOPE)

    hsm = KeyClient(HSM_URL, VaultAudience(), verify_challenge_resource=False, connection_verify=HSM_CA)
    with pytest.raises(ClientAuthenticationError) as err:
        hsm.get_key(unique("any"))
    assert err.value.status_code == 401


# ---- SDK retry behaviour against injected faults (kv-emulator's /_emulator control API) -------------------------


def control(command):
    import requests

    response = requests.post(f"{URL}/_emulator/faults", json=command, verify=CA)
    assert response.status_code == 204, response.text


def counters():
    import requests

    return requests.get(f"{URL}/_emulator/counters", verify=CA).json()


@pytest.fixture
def fault_free():
    control({"fault": "reset"})
    yield
    control({"fault": "reset"})


@pytest.mark.parametrize(
    "fault",
    [
        {"fault": "throttle_next", "target": "Sign", "n": 1, "retry_after_s": 0},
        {"fault": "fail_next", "target": "Sign", "n": 1, "status": 503},
    ],
    ids=["429", "503"],
)
def test_sdk_retries_transient_sign_failures(client, fault_free, fault):
    key = client.create_ec_key(unique("retry"), curve=KeyCurveName.p_256_k, hardware_protected=True)
    crypto = crypto_client(key.id)
    crypto.sign(SignatureAlgorithm.es256_k, bytes(32))  # token and key cached
    before = counters()["Sign"]
    control(fault)
    assert len(crypto.sign(SignatureAlgorithm.es256_k, bytes(32)).signature) == 64
    after = counters()["Sign"]
    assert after["received"] - before["received"] == 2
    assert after["succeeded"] - before["succeeded"] == 1


def test_sdk_does_not_retry_a_sign_whose_connection_dropped(client, fault_free):
    from azure.core.exceptions import ServiceResponseError

    key = client.create_ec_key(unique("drop"), curve=KeyCurveName.p_256_k, hardware_protected=True)
    crypto = crypto_client(key.id)
    crypto.sign(SignatureAlgorithm.es256_k, bytes(32))
    before = counters()["Sign"]["received"]
    control({"fault": "drop_next", "target": "Sign", "n": 1})
    # POST is not idempotent: azure-core does not resend it after the request went out.
    with pytest.raises(ServiceResponseError):
        crypto.sign(SignatureAlgorithm.es256_k, bytes(32))
    assert counters()["Sign"]["received"] - before == 1


def test_sdk_refetches_a_token_that_expired_early(client, fault_free):
    key = client.create_ec_key(unique("expire"), curve=KeyCurveName.p_256, hardware_protected=True)
    crypto = crypto_client(key.id)
    crypto.sign(SignatureAlgorithm.es256, bytes(32))
    control({"fault": "expire_issued_tokens"})
    # The SDK's challenge policy answers the 401 by asking its credential again; MSAL's cache still holds the
    # revoked token, so the call fails: the same thing happens with a token revoked by Azure (CAE aside).
    with pytest.raises(ClientAuthenticationError):
        crypto.sign(SignatureAlgorithm.es256, bytes(32))
    fresh = crypto_client(key.id, secret_credential())
    assert len(fresh.sign(SignatureAlgorithm.es256, bytes(32)).signature) == 64


# ---- wrapKey / unwrapKey (key files sealed by the vault) ---------------------------------------------------------


def rsa_wrap_key(client, bits=2048, ops=("wrapKey", "unwrapKey")):
    key = client.create_rsa_key(unique("kek"), size=bits, hardware_protected=True, key_operations=list(ops))
    assert key.key_type == KeyType.rsa_hsm
    assert len(key.key.n) * 8 == bits and key.key.e == b"\x01\x00\x01"
    return key


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
@pytest.mark.parametrize(
    "alg", [KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa1_5], ids=str
)
def test_rsa_hsm_wrap_and_unwrap_round_trip(client, bits, alg):
    key = rsa_wrap_key(client, bits)
    crypto = crypto_client(key.id)
    secret = secrets.token_bytes(32)
    wrapped = crypto.wrap_key(alg, secret)
    assert wrapped.key_id == key.id
    assert len(wrapped.encrypted_key) * 8 == bits and secret not in wrapped.encrypted_key
    assert crypto.unwrap_key(alg, wrapped.encrypted_key).key == secret


def test_remote_wrap_then_remote_unwrap_when_the_sdk_cannot_read_the_key(client, fault_free):
    # Without keys/read the SDK cannot wrap locally with the public key: both operations go to the vault.
    key = rsa_wrap_key(client)
    control({"fault": "deny_key", "key": key.name, "operation": "GetKey"})
    before = counters().get("WrapKey", {"received": 0})["received"]
    crypto = crypto_client(key.id)
    secret = secrets.token_bytes(48)
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, secret)
    assert counters()["WrapKey"]["received"] - before == 1
    assert wrapped.key_id == key.id
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == secret


def test_an_identity_without_unwrap_gets_403_from_the_sdk(client, fault_free):
    key = rsa_wrap_key(client)
    crypto = crypto_client(key.id)
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
    control({"fault": "deny_key", "key": key.name, "operation": "UnwrapKey"})
    with pytest.raises(HttpResponseError) as err:
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
    assert type(err.value) is HttpResponseError
    assert err.value.status_code == 403
    assert "Microsoft.KeyVault/vaults/keys/unwrap/action" in err.value.message
    control({"fault": "deny_key", "key": key.name, "operation": "WrapKey"})
    control({"fault": "deny_key", "key": key.name, "operation": "GetKey"})
    with pytest.raises(HttpResponseError) as err:
        crypto_client(key.id).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
    assert err.value.status_code == 403
    assert "Microsoft.KeyVault/vaults/keys/wrap/action" in err.value.message


def test_wrap_refusals_through_the_sdk(client):
    sign_only = rsa_wrap_key(client, ops=("sign", "verify"))
    with pytest.raises(HttpResponseError) as err:
        crypto_client(sign_only.id).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, bytes(256))
    assert err.value.status_code == 403
    key = rsa_wrap_key(client)
    with pytest.raises(HttpResponseError) as err:
        crypto_client(key.id).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, bytes(256))
    assert err.value.status_code == 400
    client.update_key_properties(key.name, enabled=False)
    with pytest.raises(HttpResponseError) as err:
        crypto_client(key.id).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, bytes(256))
    assert err.value.status_code == 403
    with pytest.raises(ResourceNotFoundError):
        crypto_client(f"{URL}/keys/{unique('none')}/00000000000000000000000000000000").unwrap_key(
            KeyWrapAlgorithm.rsa_oaep_256, bytes(256)
        )


@pytest.mark.parametrize("bits,alg", [(128, KeyWrapAlgorithm.aes_128), (256, KeyWrapAlgorithm.aes_256)], ids=str)
def test_managed_hsm_oct_keys_wrap_with_aes_key_wrap(bits, alg):
    cred = hsm_credential()
    hsm = KeyClient(HSM_URL, cred, verify_challenge_resource=False, connection_verify=HSM_CA, api_version=API_VERSION)
    key = hsm.create_oct_key(unique("aes"), size=bits, hardware_protected=True)
    assert key.key_type == KeyType.oct_hsm
    crypto = CryptographyClient(
        key.id, cred, verify_challenge_resource=False, connection_verify=HSM_CA, api_version=API_VERSION
    )
    secret = secrets.token_bytes(32)
    wrapped = crypto.wrap_key(alg, secret)
    assert len(wrapped.encrypted_key) == 40
    assert crypto.unwrap_key(alg, wrapped.encrypted_key).key == secret
