//! HTTPS and mTLS end to end with certificates made here (rcgen), reqwest as the client.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tezos::{Curve, SecretKey};
use tzkms::config::{KeyPolicyConfig, TlsConfig};

use crate::helpers::{assert_octez_error, vector_payload, TestSigner};

/// A certificate authority that issues server and client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM.
struct Issued {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn issue(&self, common_name: &str, server: bool) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names = if server {
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
        } else {
            vec![]
        };
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

struct Files {
    dir: tempfile::TempDir,
    server_ca: Ca,
    client_ca: Ca,
}

impl Files {
    fn new() -> Self {
        let files = Self {
            dir: tempfile::tempdir().unwrap(),
            server_ca: Ca::new("tzkms test server CA"),
            client_ca: Ca::new("tzkms test client CA"),
        };
        files.install_server_certificate(&files.server_ca);
        write(files.dir.path(), "clients-ca.pem", &files.client_ca.pem(), 0o644);
        files
    }

    /// Writes a fresh server certificate issued by `ca` over cert.pem and key.pem.
    fn install_server_certificate(&self, ca: &Ca) {
        let issued = ca.issue("127.0.0.1", true);
        write(self.dir.path(), "cert.pem", &issued.cert_pem, 0o644);
        write(self.dir.path(), "key.pem", &issued.key_pem, 0o600);
    }

    fn config(&self, mtls: bool) -> TlsConfig {
        TlsConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            certificate: self.dir.path().join("cert.pem"),
            private_key: self.dir.path().join("key.pem"),
            client_ca: mtls.then(|| self.dir.path().join("clients-ca.pem")),
        }
    }

    fn client(&self, trust: &Ca, identity: Option<&Issued>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(trust.pem().as_bytes()).unwrap());
        if let Some(id) = identity {
            let pem = format!("{}{}", id.cert_pem, id.key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let response = client.get(url).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

fn attestation() -> Vec<u8> {
    vector_payload("tezt-attestation")
}

#[tokio::test]
async fn https_and_plain_http_listeners_serve_side_by_side() {
    let files = Files::new();
    let keys = [SecretKey::generate(Curve::P256)];
    let tls = files.config(false);
    let signer = TestSigner::start_with(&keys, |c| c.server.tls = Some(tls)).await;
    let schemes: Vec<&str> = signer.endpoints.iter().map(|(s, _)| *s).collect();
    assert_eq!(schemes, ["http", "https"]);
    let pkh = keys[0].public_key().hash();
    let client = files.client(&files.server_ca, None);
    let (status, body) = get_json(&client, &signer.https_url(&format!("/keys/{pkh}")))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["public_key"], keys[0].public_key().to_string());
    let response = client
        .post(signer.https_url(&format!("/keys/{pkh}")))
        .json(&hex::encode(attestation()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = signer.get(&format!("/keys/{pkh}")).await;
    assert_eq!(status, 200);
    // A client that does not trust the server's CA does not connect.
    let stranger = files.client(&Ca::new("someone else"), None);
    assert!(get_json(&stranger, &signer.https_url("/authorized_keys"))
        .await
        .is_err());
    signer.stop().await;
}

#[tokio::test]
async fn mtls_requires_a_certificate_from_the_client_ca() {
    let files = Files::new();
    let keys = [SecretKey::generate(Curve::P256)];
    let tls = files.config(true);
    let signer = TestSigner::start_with(&keys, |c| c.server.tls = Some(tls)).await;
    let url = signer.https_url("/authorized_keys");

    let baker = files.client_ca.issue("baker-1", false);
    let (status, _) = get_json(&files.client(&files.server_ca, Some(&baker)), &url)
        .await
        .unwrap();
    assert_eq!(status, 200);

    // No certificate, or one from another CA: the handshake fails, nothing is served.
    assert!(get_json(&files.client(&files.server_ca, None), &url)
        .await
        .is_err());
    let rogue = Ca::new("tzkms test client CA").issue("baker-1", false);
    assert!(get_json(&files.client(&files.server_ca, Some(&rogue)), &url)
        .await
        .is_err());
    // The server keeps serving good clients.
    let (status, _) = get_json(&files.client(&files.server_ca, Some(&baker)), &url)
        .await
        .unwrap();
    assert_eq!(status, 200);
    signer.stop().await;
}

#[tokio::test]
async fn a_key_can_be_restricted_to_listed_tls_clients() {
    let files = Files::new();
    let keys = [SecretKey::generate(Curve::P256)];
    let pkh = keys[0].public_key().hash();
    let tls = files.config(true);
    let signer = TestSigner::start_with(&keys, |c| {
        c.server.tls = Some(tls);
        c.policy.keys.insert(
            pkh,
            KeyPolicyConfig {
                tls_clients: Some(vec!["cn:baker-1".parse().unwrap()]),
                ..KeyPolicyConfig::default()
            },
        );
    })
    .await;
    let sign = |client: reqwest::Client| {
        let url = signer.https_url(&format!("/keys/{pkh}"));
        async move {
            let r = client
                .post(url)
                .json(&hex::encode(attestation()))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let other = files.client_ca.issue("monitoring", false);
    let (status, body) = sign(files.client(&files.server_ca, Some(&other))).await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(
        &body,
        &format!("(cn:monitoring) may not use key {pkh} (policy.keys.{pkh}.tls_clients)"),
    );
    let baker = files.client_ca.issue("baker-1", false);
    let (status, body) = sign(files.client(&files.server_ca, Some(&baker))).await;
    assert_eq!(status, 200, "{body}");
    // Over plain HTTP there is no certificate: refused.
    let (status, body) = signer.sign(&pkh, "", &attestation()).await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(&body, "no client certificate");
    signer.stop().await;
}

#[tokio::test]
async fn audit_lines_name_the_client_certificate_on_every_route() {
    let captured = crate::audit::Captured::default();
    let _guard = captured.install();
    let files = Files::new();
    let keys = [SecretKey::generate(Curve::P256)];
    let pkh = keys[0].public_key().hash();
    let tls = files.config(true);
    let signer = TestSigner::start_with(&keys, |c| c.server.tls = Some(tls)).await;
    let baker = files.client_ca.issue("baker-1", false);
    let client = files.client(&files.server_ca, Some(&baker));
    let url = signer.https_url(&format!("/keys/{pkh}"));
    let read = client.get(&url).send().await.unwrap();
    assert_eq!(read.status(), 200);
    let signed = client
        .post(&url)
        .json(&hex::encode(attestation()))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    let authorized = client
        .get(signer.https_url("/authorized_keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(authorized.status(), 200);
    signer.stop().await;
    let lines = captured.audit_lines();
    let routes: Vec<&str> = lines.iter().map(|l| l["route"].as_str().unwrap()).collect();
    assert_eq!(routes, ["public_key", "sign", "authorized_keys"], "{lines:#?}");
    for line in &lines {
        assert_eq!(line["tls_client_cn"], "baker-1", "{line}");
        let fingerprint = line["tls_client"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        assert!(
            fingerprint.len() == 64 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()),
            "{line}"
        );
    }
}

#[tokio::test]
async fn reloading_swaps_the_certificate_without_closing_the_listener() {
    let files = Files::new();
    let keys = [SecretKey::generate(Curve::P256)];
    let tls = files.config(false);
    let signer = TestSigner::start_with(&keys, |c| c.server.tls = Some(tls)).await;
    let url = signer.https_url("/authorized_keys");
    let old_trust = files.client(&files.server_ca, None);
    let renewed_ca = Ca::new("tzkms renewed server CA");
    let new_trust = files.client(&renewed_ca, None);
    assert_eq!(get_json(&old_trust, &url).await.unwrap().0, 200);
    assert!(get_json(&new_trust, &url).await.is_err());

    let handle = signer.tls.clone().unwrap();
    let before = handle.fingerprint();
    files.install_server_certificate(&renewed_ca);
    let after = handle.reload().unwrap();
    assert_ne!(before, after);
    // The same port now presents the new certificate to new connections.
    let fresh = files.client(&renewed_ca, None);
    assert_eq!(get_json(&fresh, &url).await.unwrap().0, 200);
    let stale = files.client(&files.server_ca, None);
    assert!(get_json(&stale, &url).await.is_err());

    // A broken file is refused and the served certificate stays.
    write(files.dir.path(), "key.pem", "not a key", 0o600);
    assert!(handle.reload().is_err());
    assert_eq!(handle.fingerprint(), after);
    assert_eq!(
        get_json(&files.client(&renewed_ca, None), &url).await.unwrap().0,
        200
    );
    signer.stop().await;
}

#[test]
fn a_readable_private_key_or_a_mismatched_pair_is_refused_at_load() {
    let files = Files::new();
    std::fs::set_permissions(
        files.dir.path().join("key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = tzkms::server::tls::Tls::load(&files.config(false)).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
    let other = files.server_ca.issue("other", true);
    write(files.dir.path(), "key.pem", &other.key_pem, 0o600);
    let err = tzkms::server::tls::Tls::load(&files.config(false)).unwrap_err();
    assert!(err.to_string().contains("do not fit together"), "{err}");
}

#[tokio::test]
async fn garbage_and_silence_on_the_tls_port_do_not_hurt_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let files = Files::new();
    let keys = [SecretKey::generate(Curve::P256)];
    let tls = files.config(false);
    let signer = TestSigner::start_with(&keys, |c| {
        c.server.tls = Some(tls);
        c.server.tls_handshake_timeout_ms = 300;
    })
    .await;
    let https = signer.endpoints.iter().find(|(s, _)| *s == "https").unwrap().1;
    // Garbage instead of a ClientHello, and a plain HTTP request on the TLS port.
    for bytes in [
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3][..],
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        &[0u8; 4096][..],
    ] {
        let mut s = tokio::net::TcpStream::connect(https).await.unwrap();
        let _ = s.write_all(bytes).await;
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "garbage kept a TLS connection open");
    }
    // A client that connects and never speaks is dropped after the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(https).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(20), silent.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a silent TLS client kept its connection");
    let client = files.client(&files.server_ca, None);
    let (status, _) = get_json(&client, &signer.https_url("/authorized_keys"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    signer.stop().await;
}

/// The binary: SIGHUP swaps the certificate of the running HTTPS listener; a broken key file on the next
/// SIGHUP is refused, counted, and the renewed certificate stays served.
#[tokio::test]
async fn sighup_reloads_the_certificate_of_the_running_binary() {
    let files = Files::new();
    let data = files.dir.path().join("data");
    let sk = SecretKey::generate(Curve::P256);
    tzkms::startup::write_new_key(&data, "k", &sk).unwrap();
    let tls = files.config(false);
    let config = files.dir.path().join("tzkms.toml");
    std::fs::write(
        &config,
        format!(
            "[keys]\ngenerate_if_empty = false\n[server.tls]\nlisten = [\"127.0.0.1:0\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            tls.certificate.display(),
            tls.private_key.display()
        ),
    )
    .unwrap();
    let mut signer = crate::reload::Running::start(&data, &config, &[]).await;
    let https = https_addr(&signer).await;
    let url = format!("https://{https}/authorized_keys");
    assert_eq!(
        get_json(&files.client(&files.server_ca, None), &url)
            .await
            .unwrap()
            .0,
        200
    );

    let renewed_ca = Ca::new("tzkms renewed server CA");
    files.install_server_certificate(&renewed_ca);
    signer.reload_and_wait("ok", 1).await;
    assert_eq!(
        get_json(&files.client(&renewed_ca, None), &url).await.unwrap().0,
        200
    );
    assert!(get_json(&files.client(&files.server_ca, None), &url)
        .await
        .is_err());
    assert!(signer.log().contains("SIGHUP: TLS certificate reloaded"));

    write(files.dir.path(), "key.pem", "not a key", 0o600);
    signer.reload_and_wait("failed", 1).await;
    let log = signer.log();
    let failure = log
        .lines()
        .find(|l| l.contains("SIGHUP: reload failed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(failure.contains("key.pem"), "{failure}");
    assert_eq!(
        get_json(&files.client(&renewed_ca, None), &url).await.unwrap().0,
        200
    );
    assert!(signer.server.terminate().await.success());
}

/// The address of the binary's HTTPS listener: it is announced after the HTTP one the process helper
/// waits for, so this polls the log.
async fn https_addr(signer: &crate::reload::Running) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = signer.log();
        let found = log
            .lines()
            .find(|l| l.contains("listening") && l.contains("\"https\""))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned);
        if let Some(addr) = found {
            return addr;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no https listener in the log:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs the openssl CLI in `dir`; returns its stdout.
fn openssl_in(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A client holding an X.509 v1 certificate (openssl's `x509 -req` without extensions) fails the mTLS
/// handshake, and the signer's log says so at WARN with the fix; a v3 certificate from the same CA, made
/// with the recipe in docs/security.md, is accepted.
#[tokio::test]
async fn a_v1_client_certificate_is_logged_as_a_warning_naming_the_fix() {
    let files = Files::new();
    let dir = files.dir.path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "clients-ca.pem",
        "-subj",
        "/CN=clients CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl_in(dir, &ca);
    let mut csr = vec!["req", "-new"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=baker-1",
    ]);
    openssl_in(dir, &csr);
    let sign = [
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "clients-ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
    ];
    openssl_in(dir, &[&sign[..], &["-out", "v1.pem"]].concat());
    let text = openssl_in(dir, &["x509", "-in", "v1.pem", "-noout", "-text"]);
    if !text.contains("Version: 1 (0x0)") {
        // OpenSSL 3.2+ adds key identifiers (so v3) by default; `req -x509v1` forces v1 there.
        openssl_in(
            dir,
            &[
                "req",
                "-new",
                "-x509",
                "-x509v1",
                "-key",
                "client.key",
                "-subj",
                "/CN=baker-1",
                "-CA",
                "clients-ca.pem",
                "-CAkey",
                "ca.key",
                "-days",
                "2",
                "-out",
                "v1.pem",
            ],
        );
    }
    let text = openssl_in(dir, &["x509", "-in", "v1.pem", "-noout", "-text"]);
    assert!(text.contains("Version: 1 (0x0)"), "not a v1 certificate:\n{text}");
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl_in(
        dir,
        &[&sign[..], &["-extfile", "client.ext", "-out", "v3.pem"]].concat(),
    );

    let data = dir.join("data");
    tzkms::startup::write_new_key(&data, "k", &SecretKey::generate(Curve::P256)).unwrap();
    let tls = files.config(true);
    let config = dir.join("tzkms.toml");
    std::fs::write(
        &config,
        format!(
            "[keys]\ngenerate_if_empty = false\n[server.tls]\nlisten = [\"127.0.0.1:0\"]\ncertificate = \"{}\"\n\
             private_key = \"{}\"\nclient_ca = \"{}\"\n",
            tls.certificate.display(),
            tls.private_key.display(),
            dir.join("clients-ca.pem").display()
        ),
    )
    .unwrap();
    let signer = crate::reload::Running::start(&data, &config, &[]).await;
    let url = format!("https://{}/authorized_keys", https_addr(&signer).await);
    let key = std::fs::read_to_string(dir.join("client.key")).unwrap();
    let holding = |cert: &str| Issued {
        cert_pem: std::fs::read_to_string(dir.join(cert)).unwrap(),
        key_pem: key.clone(),
    };

    // rustls will not even load a v1 certificate as a client identity, so the openssl CLI presents it.
    write(dir, "server-ca.pem", &files.server_ca.pem(), 0o644);
    let https = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut client = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &https,
            "-cert",
            "v1.pem",
            "-key",
            "client.key",
            "-CAfile",
            "server-ca.pem",
            "-quiet",
        ])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = client.stdin.take().unwrap();
        let _ = stdin.write_all(b"GET /authorized_keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    }
    let out = client.wait_with_output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        !answer.contains("HTTP/1.1 200"),
        "a v1 client certificate was accepted: {answer}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let warning = loop {
        let log = signer.log();
        if let Some(line) = log.lines().find(|l| l.contains("X.509 v1")) {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warning about the v1 certificate:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(
        warning.contains("X.509 v3 client certificate") && warning.contains("extendedKeyUsage=clientAuth"),
        "{warning}"
    );
    assert!(warning.contains("docs/security.md"), "{warning}");

    let (status, _) = get_json(&files.client(&files.server_ca, Some(&holding("v3.pem"))), &url)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(signer.server.terminate().await.success());
}
