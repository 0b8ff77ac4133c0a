//! `tzkms threshold split` against the real binary: Octez's JSON on standard output, which parses back
//! with `ShareSet` and interpolates to the key; the share public keys on standard error; the refusals.

use std::path::Path;

use tezos::threshold::{self, ShareSet};
use tezos::{BlsScheme, Curve, SecretKey};

use crate::process::{run, run_with};

async fn import(dir: &Path, sk: &SecretKey, alias: &str) {
    let (ok, _, err) = run_with(
        &["keys", "import", "--alias", alias],
        dir,
        &[],
        Some(&sk.to_b58()),
    )
    .await;
    assert!(ok, "{err}");
}

/// The JSON parses with ShareSet, holds the key's shares, and stderr lists each share's public key.
fn check_output(sk: &SecretKey, out: &str, err: &str, n: u8, m: u8) -> ShareSet {
    let set: ShareSet = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(set.public_key(), sk.public_key());
    assert_eq!(set.share_count(), n);
    assert_eq!(set.threshold(), m);
    // Octez's field names, nothing else.
    let v: serde_json::Value = serde_json::from_str(out).unwrap();
    let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["proof", "public_key", "public_key_hash", "secret_shares"]
    );
    for (id, pk) in set.share_public_keys() {
        assert!(
            err.contains(&format!("share {id}: public key {pk}")),
            "share {id} missing from {err}"
        );
    }
    threshold::check_share_keys(set.public_key(), &set.share_public_keys(), m).unwrap();
    // M of the shares sign for the key, byte for byte the key's own signature.
    let msg = b"\x13\x7a\x06\xa7\x70some tz4 attestation";
    for scheme in [BlsScheme::ProofOfPossession, BlsScheme::Augmented] {
        let partials: Vec<_> = set
            .shares()
            .iter()
            .rev()
            .take(usize::from(m))
            .map(|s| (s.id, s.sign_partial(set.public_key(), msg, scheme)))
            .collect();
        let sig = threshold::combine(&partials, m).unwrap();
        assert!(sk.public_key().verify(msg, &sig, scheme));
        assert_eq!(sig, sk.sign(msg, scheme).unwrap());
    }
    set
}

#[tokio::test]
async fn split_a_data_dir_key_by_name_or_address() {
    let dir = tempfile::tempdir().unwrap();
    let sk = SecretKey::generate(Curve::Bls);
    import(dir.path(), &sk, "baker").await;
    let (ok, out, err) = run(
        &[
            "threshold",
            "split",
            "--key",
            "baker",
            "--shares",
            "5",
            "--threshold",
            "3",
        ],
        dir.path(),
    )
    .await;
    assert!(ok, "{err}");
    let first = check_output(&sk, &out, &err, 5, 3);
    // By tz4 address, though the file is named "baker": a fresh polynomial each time.
    let pkh = sk.public_key().hash().to_string();
    let (ok, out, err) = run(
        &[
            "threshold",
            "split",
            "--key",
            &pkh,
            "--shares",
            "3",
            "--threshold",
            "2",
        ],
        dir.path(),
    )
    .await;
    assert!(ok, "{err}");
    let second = check_output(&sk, &out, &err, 3, 2);
    assert_ne!(first.shares()[0].public_key(), second.shares()[0].public_key());
}

#[tokio::test]
async fn split_a_key_from_standard_input_or_a_file_encrypted_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let sk = SecretKey::generate(Curve::Bls);
    let args = [
        "threshold",
        "split",
        "--secret-key-file",
        "-",
        "--shares",
        "3",
        "--threshold",
        "2",
    ];
    let text = format!("unencrypted:{}\n", sk.to_b58().as_str());
    let (ok, out, err) = run_with(&args, dir.path(), &[], Some(&text)).await;
    assert!(ok, "{err}");
    check_output(&sk, &out, &err, 3, 2);

    let password = "correct horse";
    let esk = tezos::encrypted::encrypt(&sk, password.as_bytes());
    let file = dir.path().join("key.txt");
    std::fs::write(&file, format!("encrypted:{esk}")).unwrap();
    let path = file.to_str().unwrap();
    let args = [
        "threshold",
        "split",
        "--secret-key-file",
        path,
        "--shares",
        "4",
        "--threshold",
        "3",
    ];
    // A key file readable by others is refused, as for the data directory's keys.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out, err) = run_with(&args, dir.path(), &[("TZKMS_KEY_PASSWORD", password)], None).await;
    assert!(!ok && out.is_empty() && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, out, err) = run_with(&args, dir.path(), &[("TZKMS_KEY_PASSWORD", "")], None).await;
    assert!(
        !ok && out.is_empty() && err.contains("TZKMS_KEY_PASSWORD"),
        "{err}"
    );
    let (ok, out, err) = run_with(&args, dir.path(), &[("TZKMS_KEY_PASSWORD", password)], None).await;
    assert!(ok, "{err}");
    check_output(&sk, &out, &err, 4, 3);
}

#[tokio::test]
async fn split_refuses_minorities_other_curves_and_secrets_in_argv() {
    let dir = tempfile::tempdir().unwrap();
    let sk = SecretKey::generate(Curve::Bls);
    import(dir.path(), &sk, "baker").await;
    let split = |shares: &'static str, threshold: &'static str, extra: &'static [&'static str]| {
        let mut args = vec![
            "threshold",
            "split",
            "--key",
            "baker",
            "--shares",
            shares,
            "--threshold",
            threshold,
        ];
        args.extend_from_slice(extra);
        args
    };

    // M <= N/2: refused, saying why; allowed only when asked for.
    let (ok, out, err) = run(&split("4", "2", &[]), dir.path()).await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("two disjoint groups") && err.contains("at least 3 of 4"),
        "{err}"
    );
    assert!(err.contains("--allow-non-majority"), "{err}");
    let (ok, out, err) = run(&split("4", "2", &["--allow-non-majority"]), dir.path()).await;
    assert!(ok, "{err}");
    check_output(&sk, &out, &err, 4, 2);

    for (n, m, expected) in [
        ("3", "1", "threshold of 1"),
        ("3", "4", "between 1 and the share count 3"),
        ("128", "100", "1 to 127 shares"),
    ] {
        let (ok, out, err) = run(&split(n, m, &["--allow-non-majority"]), dir.path()).await;
        assert!(!ok && out.is_empty(), "{n}/{m}: {out}");
        assert!(err.contains(expected), "{n}/{m}: {err}");
    }

    let ed = SecretKey::generate(Curve::Ed25519);
    import(dir.path(), &ed, "ed").await;
    let (ok, out, err) = run(
        &[
            "threshold",
            "split",
            "--key",
            "ed",
            "--shares",
            "3",
            "--threshold",
            "2",
        ],
        dir.path(),
    )
    .await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("not a tz4 key"), "{err}");

    let (ok, _, err) = run(
        &[
            "threshold",
            "split",
            "--key",
            "nosuch",
            "--shares",
            "3",
            "--threshold",
            "2",
        ],
        dir.path(),
    )
    .await;
    assert!(!ok && err.contains("no key named nosuch"), "{err}");

    // There is no way to pass the secret itself as an argument.
    let b58 = sk.to_b58();
    let (ok, out, _) = run(
        &[
            "threshold",
            "split",
            b58.as_str(),
            "--shares",
            "3",
            "--threshold",
            "2",
        ],
        dir.path(),
    )
    .await;
    assert!(!ok && out.is_empty());
    let (ok, _, err) = run(
        &["threshold", "split", "--shares", "3", "--threshold", "2"],
        dir.path(),
    )
    .await;
    assert!(!ok && err.contains("--key"), "{err}");
}
