//! `tzkms auth add|list|remove` on the real binary, and a running signer applying the change on SIGHUP.

use std::path::Path;

use tezos::{BlsScheme, Curve, PublicKeyHash, SecretKey};
use tzkms::auth::authenticated_bytes;

use crate::helpers::attestation;
use crate::process::run;
use crate::reload::Running;

async fn auth(config: &Path, data: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--config", config.to_str().unwrap(), "auth"];
    all.extend_from_slice(args);
    run(&all, data).await
}

/// An authenticated signing request for `pkh`, signed by `by`: the HTTP status.
async fn sign_as(signer: &Running, by: &SecretKey, pkh: &PublicKeyHash, payload: &[u8]) -> u16 {
    let auth = by
        .sign(&authenticated_bytes(pkh, payload), BlsScheme::default())
        .unwrap();
    signer
        .http
        .post(format!(
            "http://{}/keys/{pkh}?authentication={auth}",
            signer.addr()
        ))
        .header("content-type", "application/json")
        .body(format!("\"{}\"", hex::encode(payload)))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn auth_add_list_remove_edit_the_file_and_a_reload_applies_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let baker = SecretKey::generate(Curve::P256);
    let pkh = baker.public_key().hash();
    tzkms::startup::write_new_key(&data, "baker", &baker).unwrap();
    let file = dir.path().join("authorized_keys");
    let config = dir.path().join("tzkms.toml");
    std::fs::write(
        &config,
        format!(
            "[keys]\ngenerate_if_empty = false\n[auth]\nrequired = true\nauthorized_keys_file = \"{}\"\n",
            file.display()
        ),
    )
    .unwrap();
    let first = SecretKey::generate(Curve::Ed25519);
    let second = SecretKey::generate(Curve::Secp256k1);

    // The first key creates the file.
    let first_pk = first.public_key().to_string();
    let (ok, out, err) = auth(&config, &data, &["add", &first_pk, "--name", "baker-host"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("added {} (baker-host)", first.public_key().hash())),
        "{out}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // Octez's format: octez-signer reads the same file.
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        doc,
        serde_json::json!([{ "name": "baker-host", "value": first_pk }])
    );
    // A mode set by the operator is kept across rewrites.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();

    // Refused: duplicates (by key or by name), and what is not a public key. The file is unchanged.
    let before = std::fs::read_to_string(&file).unwrap();
    let (ok, _, err) = auth(&config, &data, &["add", &first_pk, "--name", "other"]).await;
    assert!(
        !ok && err.contains("already authorized") && err.contains("baker-host"),
        "{err}"
    );
    let second_pk = second.public_key().to_string();
    let (ok, _, err) = auth(&config, &data, &["add", &second_pk, "--name", "baker-host"]).await;
    assert!(!ok && err.contains("already has a key named"), "{err}");
    let (ok, _, err) = auth(&config, &data, &["add", "edpkNOTAKEY"]).await;
    assert!(!ok && err.contains("is not a public key"), "{err}");
    let (ok, _, err) = auth(&config, &data, &["add", &pkh.to_string()]).await;
    assert!(!ok && err.contains("is not a public key"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);

    let mut signer = Running::start(&data, &config, &[]).await;
    assert_eq!(sign_as(&signer, &first, &pkh, &attestation(1, 1)).await, 200);
    assert_eq!(sign_as(&signer, &second, &pkh, &attestation(2, 1)).await, 403);

    // add, SIGHUP: the new key is accepted.
    let (ok, _, err) = auth(&config, &data, &["add", &second_pk]).await;
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    signer.reload_and_wait("ok", 1).await;
    assert_eq!(sign_as(&signer, &second, &pkh, &attestation(2, 1)).await, 200);

    // list: a header, one row each; --json.
    let (ok, out, err) = auth(&config, &data, &["list"]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ADDRESS", "NAME", "MAY", "SIGN", "SOURCE"]
    );
    assert_eq!(lines.len(), 3, "{out}");
    let second_pkh = second.public_key().hash().to_string();
    assert!(lines[1].starts_with(&first.public_key().hash().to_string()) && lines[1].contains("baker-host"));
    // Without --name, the name is the address.
    assert!(
        lines[2].starts_with(&second_pkh) && lines[2].matches(&second_pkh).count() == 2,
        "{out}"
    );
    let (ok, out, _) = auth(&config, &data, &["list", "--json"]).await;
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[1]["public_key"], second_pk);
    assert_eq!(listed[1]["source"], file.display().to_string());

    // remove by address, SIGHUP: refused again.
    let (ok, out, err) = auth(&config, &data, &["remove", &second_pkh]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&format!("removed {second_pkh}")), "{out}");
    signer.reload_and_wait("ok", 2).await;
    assert_eq!(sign_as(&signer, &second, &pkh, &attestation(3, 1)).await, 403);
    assert_eq!(sign_as(&signer, &first, &pkh, &attestation(3, 1)).await, 200);

    // The last key cannot go while auth.required is on: the reload would fail and keep it in force.
    let (ok, _, err) = auth(&config, &data, &["remove", "baker-host"]).await;
    assert!(!ok && err.contains("add another key first"), "{err}");
    let (ok, _, err) = auth(&config, &data, &["remove", "nobody"]).await;
    assert!(!ok && err.contains("no authorized key \"nobody\""), "{err}");
    assert!(std::fs::read_to_string(&file).unwrap().contains("baker-host"));
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(signer.server.terminate().await.success());
}

#[tokio::test]
async fn auth_add_without_a_configured_file_says_how_to_configure_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tzkms.toml");
    std::fs::write(&config, "[keys]\ngenerate_if_empty = false\n").unwrap();
    let pk = SecretKey::generate(Curve::Ed25519).public_key().to_string();
    let (ok, _, err) = auth(&config, dir.path(), &["add", &pk]).await;
    assert!(!ok);
    assert!(err.contains("authorized_keys_file = "), "{err}");
    assert!(err.contains(config.to_str().unwrap()), "{err}");
}
