//! Azure endpoints that cannot be reached, through the real binary (`azure keys list`, `config check`):
//! each cause is named with its fix, with and without RUST_BACKTRACE, instead of reqwest's "error sending
//! request for url". Every connection stays on loopback (or is a `.invalid` name, which never resolves).

use std::path::{Path, PathBuf};

use kv_emulator::Emulator;

use crate::azure::emulator;
use crate::process::BIN;

/// A config whose vault is `vault_url` and whose credential is the emulator's service principal at
/// `authority` (the emulator's own unless given).
fn config(
    dir: &Path,
    emu: &Emulator,
    vault_url: &str,
    trust_emulator: bool,
    authority: Option<&str>,
) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join("azure-secret");
    std::fs::write(&secret, emu.client_secret()).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca = if trust_emulator {
        format!("ca_file = \"{}\"\n", emu.ca_pem_path().unwrap().display())
    } else {
        String::new()
    };
    let path = dir.join(format!("tzkms-{}.toml", rand_suffix()));
    std::fs::write(
        &path,
        format!(
            "[keys]\ngenerate_if_empty = false\n\n[azure]\nvault_url = \"{vault_url}\"\nrequest_timeout_ms = 500\n{ca}\n\
             [azure.credential]\nkind = \"client_secret\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\n\
             client_secret_file = \"{}\"\nauthority_host = \"{}\"\n",
            emu.tenant_id(),
            emu.client_id(),
            secret.display(),
            authority.unwrap_or(emu.authority_host()),
        ),
    )
    .unwrap();
    path
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `tzkms --config <config> <args>` with a clean proxy environment plus `env`, RUST_BACKTRACE unset
/// or set; returns stderr, asserting failure.
async fn fails(config: &Path, data: &Path, args: &[&str], env: &[(&str, &str)], backtrace: bool) -> String {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(args);
    for var in [
        "RUST_BACKTRACE",
        "RUST_LIB_BACKTRACE",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
    ] {
        cmd.env_remove(var);
    }
    if backtrace {
        cmd.env("RUST_BACKTRACE", "1");
    }
    cmd.env("TZKMS_LOG", "warn").envs(env.iter().copied());
    let out = cmd.output().await.expect("run tzkms");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded:\n{stderr}");
    assert!(
        !stderr.contains("error sending request"),
        "reqwest's bare message:\n{stderr}"
    );
    stderr
}

/// Both commands, without and with RUST_BACKTRACE, say `expected`.
async fn each_says(config: &Path, data: &Path, env: &[(&str, &str)], expected: &[&str]) {
    for args in [&["azure", "keys", "list"][..], &["config", "check"][..]] {
        for backtrace in [false, true] {
            let err = fails(config, data, args, env, backtrace).await;
            for needle in expected {
                assert!(
                    err.contains(needle),
                    "{args:?} (RUST_BACKTRACE {backtrace}) does not say {needle:?}:\n{err}"
                );
            }
        }
    }
}

#[tokio::test]
async fn each_unreachable_azure_endpoint_is_named_with_its_cause_and_fix() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();

    // DNS.
    let c = config(dir.path(), &emu, "https://no-such-vault.invalid", true, None);
    each_says(
        &c,
        &data,
        &[],
        &[
            "DNS lookup of no-such-vault.invalid failed",
            "check the host name in the URL and this machine's DNS",
        ],
    )
    .await;

    // Nothing listens.
    let port = closed_port();
    let c = config(dir.path(), &emu, &format!("https://127.0.0.1:{port}"), true, None);
    each_says(
        &c,
        &data,
        &[],
        &[&format!(
            "connection to 127.0.0.1:{port} refused: nothing listens there; check the URL and its port"
        )],
    )
    .await;

    // A TLS server whose CA the client does not trust (the emulator without its ca_file).
    let c = config(dir.path(), &emu, emu.url(), false, None);
    each_says(
        &c,
        &data,
        &[],
        &[
            "TLS: the certificate of 127.0.0.1 is not trusted (issued by a CA this machine does not trust)",
            "put that CA (PEM) in azure.ca_file or SSL_CERT_FILE",
        ],
    )
    .await;
    // ... and SSL_CERT_FILE is the fix it names.
    let (ok, out, err) = crate::process::run_with(
        &["--config", c.to_str().unwrap(), "azure", "keys", "list"],
        &data,
        &[("SSL_CERT_FILE", emu.ca_pem_path().unwrap().to_str().unwrap())],
        None,
    )
    .await;
    assert!(ok, "with SSL_CERT_FILE: {err}\n{out}");

    // A listener that accepts and never answers, with azure.request_timeout_ms = 500.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let c = config(dir.path(), &emu, &format!("https://{addr}"), true, None);
    each_says(&c, &data, &[], &[&format!("no answer from {addr} within 0.5s")]).await;
    holder.abort();

    // HTTPS_PROXY pointing at a closed port: the proxy is named, not the vault.
    let proxy = format!("http://127.0.0.1:{}", closed_port());
    let c = config(dir.path(), &emu, "https://myvault.invalid", true, None);
    each_says(
        &c,
        &data,
        &[("HTTPS_PROXY", &proxy)],
        &[&format!(
            "proxy {proxy} (from HTTPS_PROXY) refused the connection: nothing listens there; fix HTTPS_PROXY"
        )],
    )
    .await;

    // The vault answers, the token endpoint does not: the credential's request says why too.
    let port = closed_port();
    let authority = format!("https://127.0.0.1:{port}");
    let c = config(dir.path(), &emu, emu.url(), true, Some(&authority));
    each_says(
        &c,
        &data,
        &[],
        &[
            "client secret",
            &format!("connection to 127.0.0.1:{port} refused"),
        ],
    )
    .await;
}
