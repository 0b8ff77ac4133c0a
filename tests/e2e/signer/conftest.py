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


def _launch(key_specs, env=None, config: str | None = None) -> Signer:
    """key_specs: iterable of dicts with 'sk' (or 'esk' + 'password') and 'pkh'.
    config: TOML text passed with --config (e.g. a wider magic-byte policy)."""
    data_dir = h.make_data_dir()
    keys = {}
    for spec in key_specs:
        secret = spec.get("esk") or spec["sk"]
        pkh = h.import_key(data_dir, secret, password=spec.get("password"))
        assert pkh == spec["pkh"], f"tzkms keys import printed {pkh!r}, expected {spec['pkh']}"
        keys[pkh] = spec
    extra = ()
    if config is not None:
        path = data_dir.with_name(data_dir.name + ".toml")
        path.write_text(config)
        extra = ("--config", str(path))
    server = h.start_server(data_dir, env=env, extra_args=extra)
    return Signer(server=server, keys=keys)


@pytest.fixture(scope="module")
def launch():
    """Factory fixture: launch(key_specs, env=None, config=None) -> Signer.

    Every server gets a fresh data directory, hence a fresh high watermark.
    All are stopped (SIGTERM) after the module."""
    started: list[Signer] = []

    def factory(key_specs, env=None, config=None) -> Signer:
        s = _launch(key_specs, env, config)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.server.stop()
        shutil.rmtree(s.server.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def fresh_signers(launch):
    """fresh_signers(name, key_specs) -> one Signer per name, created on first use.

    The high watermark refuses a second, different consensus payload at the
    same (chain, level, round, kind), and payloads.json has such pairs (e.g.
    tag 21 and tag 23 attestations of one slot), so tests that sign many
    consensus payloads with one key use one server per payload."""
    cache: dict = {}

    def get(name, key_specs, **kw) -> Signer:
        if name not in cache:
            cache[name] = launch(key_specs, **kw)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def signer(launch) -> Signer:
    """One server with a tz1, a tz2, a tz3 and two tz4 keys from keys.json."""
    return launch([h.vector_key(i) for i in (
        "bootstrap1", "hardcoded_secp256k1", "hardcoded_p256", "bls_test_account", "hardcoded_bls")],
        config=h.GENERIC_UNCHECKED)


def pytest_sessionfinish(session, exitstatus):
    h.kill_leftovers()
