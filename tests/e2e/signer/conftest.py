"""pytest fixtures: start real tzkms servers with keys from the shared vectors."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import pytest

import tzkms_harness as h


@dataclass
class Signer:
    """A running tzkms server and the keys it serves (pkh -> vector dict)."""

    server: h.Server
    keys: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url


def _launch(key_specs, env=None, prefix="tzkms-e2e-") -> Signer:
    """key_specs: iterable of dicts with 'sk' (or 'esk' + 'password') and 'pkh'."""
    data_dir = h.make_data_dir(prefix)
    keys = {}
    for spec in key_specs:
        secret = spec.get("esk") or spec["sk"]
        pkh = h.import_key(data_dir, secret, password=spec.get("password"))
        assert pkh == spec["pkh"], f"tzkms keys import printed {pkh!r}, expected {spec['pkh']}"
        keys[pkh] = spec
    server = h.start_server(data_dir, env=env)
    return Signer(server=server, keys=keys)


@pytest.fixture(scope="module")
def launch():
    """Factory fixture: launch(key_specs, env=None) -> Signer; stopped after the module."""
    started: list[Signer] = []

    def factory(key_specs, env=None) -> Signer:
        s = _launch(key_specs, env)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.server.stop()
        shutil.rmtree(s.server.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def signer(launch) -> Signer:
    """One server with a tz1, a tz2, a tz3 and two tz4 keys from keys.json."""
    return launch([h.vector_key(i) for i in (
        "bootstrap1", "hardcoded_secp256k1", "hardcoded_p256", "bls_test_account", "hardcoded_bls")])


def pytest_sessionfinish(session, exitstatus):
    h.kill_leftovers()
