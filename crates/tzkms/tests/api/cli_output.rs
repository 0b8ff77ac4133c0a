//! What the CLI prints for people and scripts: the `keys list` table, the `octez-client import` lines for
//! the configured listener, and the log level and format flags.

use std::path::Path;

use crate::azure::emulator;
use crate::azure_cli::{write_config, CLIENT_SECRET};
use crate::process::{run_with, Server};

/// `keys generate --curve <curve>` in `data`, with `config` (TOML text, written beside `data`) and `env`:
/// (pkh, stdout, stderr).
async fn generate(data: &Path, config: &str, env: &[(&str, &str)]) -> (String, String, String) {
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    let (ok, out, err) = run_with(
        &[
            "--config",
            path.to_str().unwrap(),
            "keys",
            "generate",
            "--curve",
            "p256",
        ],
        data,
        env,
        None,
    )
    .await;
    assert!(ok, "{err}");
    (out.lines().next().unwrap().to_owned(), out, err)
}

#[tokio::test]
async fn keys_list_prints_a_header_row_then_one_key_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut pkhs = Vec::new();
    for curve in ["p256", "ed25519"] {
        let (ok, out, err) = run_with(&["keys", "generate", "--curve", curve], &data, &[], None).await;
        assert!(ok, "{err}");
        pkhs.push(out.lines().next().unwrap().to_owned());
    }
    let (ok, out, err) = run_with(&["keys", "list"], &data, &[], None).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["ADDRESS", "CURVE", "BACKEND", "NAME"], "{out}");
    assert_eq!(lines.len(), 3, "{out}");
    for pkh in &pkhs {
        let row = lines[1..]
            .iter()
            .find(|l| l.starts_with(pkh.as_str()))
            .unwrap_or_else(|| panic!("{pkh} not listed: {out}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.len(), 4, "{row}");
        assert_eq!(cells[2], "file", "{row}");
        // The columns line up under the header.
        assert_eq!(row.find(cells[1]), lines[0].find("CURVE"), "{out}");
    }
    // --json stays a bare list, no header.
    let (ok, out, _) = run_with(&["keys", "list", "--json"], &data, &[], None).await;
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn import_lines_use_the_configured_listen_address() {
    let dir = tempfile::tempdir().unwrap();

    // server.listen of the config file.
    let data = dir.path().join("listen");
    let (pkh, out, _) = generate(&data, "[server]\nlisten = [\"10.1.2.3:7000\"]\n", &[]).await;
    assert!(
        out.contains(&format!(
            "octez-client import secret key <alias> http://10.1.2.3:7000/{pkh}\n"
        )),
        "{out}"
    );
    // keys show prints the same line.
    let config = data.with_extension("toml");
    let (ok, shown, err) = run_with(
        &["--config", config.to_str().unwrap(), "keys", "show", &pkh],
        &data,
        &[],
        None,
    )
    .await;
    assert!(ok, "{err}");
    assert!(shown.contains(&format!("http://10.1.2.3:7000/{pkh}")), "{shown}");

    // TZKMS_LISTEN overrides it, as it does for serve.
    let data = dir.path().join("env");
    let (pkh, out, _) = generate(
        &data,
        "[server]\nlisten = [\"10.1.2.3:7000\"]\n",
        &[("TZKMS_LISTEN", "192.0.2.7:6800")],
    )
    .await;
    assert!(out.contains(&format!("http://192.0.2.7:6800/{pkh}")), "{out}");
    assert!(!out.contains("10.1.2.3"), "{out}");

    // Every interface: a placeholder the user must replace, and a note saying so.
    let data = dir.path().join("any");
    let (pkh, out, err) = generate(&data, "[server]\nlisten = [\"0.0.0.0:6732\"]\n", &[]).await;
    assert!(out.contains(&format!("http://<signer-host>:6732/{pkh}")), "{out}");
    assert!(!out.contains("0.0.0.0"), "{out}");
    assert!(err.contains("replace <signer-host>"), "{err}");
    let data = dir.path().join("any6");
    let (pkh, out, _) = generate(&data, "[server]\nlisten = [\"[::]:6740\"]\n", &[]).await;
    assert!(out.contains(&format!("http://<signer-host>:6740/{pkh}")), "{out}");
    let data = dir.path().join("v6");
    let (pkh, out, _) = generate(&data, "[server]\nlisten = [\"[::1]:6741\"]\n", &[]).await;
    assert!(out.contains(&format!("http://[::1]:6741/{pkh}")), "{out}");

    // TLS: the HTTPS listener is the one a remote baker uses.
    let data = dir.path().join("tls");
    let (pkh, out, _) = generate(
        &data,
        "[server]\nlisten = [\"127.0.0.1:6732\"]\n[server.tls]\nlisten = [\"10.0.0.5:6733\"]\n\
         certificate = \"/etc/tzkms/tls/server.pem\"\nprivate_key = \"/etc/tzkms/tls/server.key\"\n",
        &[],
    )
    .await;
    assert!(out.contains(&format!("https://10.0.0.5:6733/{pkh}")), "{out}");

    // keys import prints it too.
    let data = dir.path().join("import");
    let config = dir.path().join("import.toml");
    std::fs::write(&config, "[server]\nlisten = [\"10.9.8.7:6999\"]\n").unwrap();
    let key = tezos::SecretKey::generate(tezos::Curve::Secp256k1);
    let (ok, out, err) = run_with(
        &["--config", config.to_str().unwrap(), "keys", "import"],
        &data,
        &[],
        Some(key.to_b58().as_str()),
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("http://10.9.8.7:6999/{}", key.public_key().hash())),
        "{out}"
    );
}

#[tokio::test]
async fn azure_create_and_import_print_the_configured_listen_address() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), CLIENT_SECRET);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[server]\nlisten = [\"0.0.0.0:6800\"]\n");
    text.push_str(
        "[server.tls]\nlisten = [\"10.0.0.9:6801\"]\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    let (ok, out, err) = run_with(
        &[
            "--config", config, "azure", "keys", "create", "--name", "baker", "--curve", "p256",
        ],
        &data,
        &[],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let pkh = out.lines().next().unwrap();
    assert!(out.contains(&format!("https://10.0.0.9:6801/{pkh}")), "{out}");

    // Without TLS, the plain listener on every interface: a placeholder.
    let plain = dir.path().join("plain.toml");
    let text = std::fs::read_to_string(config).unwrap();
    let text = text.split("[server.tls]").next().unwrap().to_owned();
    std::fs::write(&plain, text).unwrap();
    let key = tezos::SecretKey::generate(tezos::Curve::P256);
    let (ok, out, err) = run_with(
        &[
            "--config",
            plain.to_str().unwrap(),
            "azure",
            "keys",
            "import",
            "--name",
            "imported",
        ],
        &data,
        &[],
        Some(key.to_b58().as_str()),
    )
    .await;
    assert!(ok, "{err}");
    let pkh = key.public_key().hash();
    assert!(out.contains(&format!("http://<signer-host>:6800/{pkh}")), "{out}");
    assert!(err.contains("replace <signer-host>"), "{err}");
}

#[tokio::test]
async fn log_level_flag_wins_over_tzkms_log_and_json_lines_parse() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, _, err) = run_with(&["keys", "generate", "--curve", "p256"], &data, &[], None).await;
    assert!(ok, "{err}");
    let config = dir.path().join("tzkms.toml");
    std::fs::write(&config, "[keys]\ngenerate_if_empty = false\n").unwrap();
    let config = config.to_str().unwrap();

    // The harness sets TZKMS_LOG=warn: --log-level debug overrides it.
    let (ok, _, err) = run_with(
        &["--config", config, "--log-level", "debug", "keys", "list"],
        &data,
        &[],
        None,
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("DEBUG") && l.contains("configuration file read")),
        "{err}"
    );
    // Without the flag, TZKMS_LOG applies.
    let (ok, _, err) = run_with(&["--config", config, "keys", "list"], &data, &[], None).await;
    assert!(ok);
    assert!(!err.contains("configuration file read"), "{err}");

    // JSON: one parseable object per line, with the level and the message.
    let (ok, _, err) = run_with(
        &[
            "--config",
            config,
            "--log-level",
            "trace",
            "--log-format",
            "json",
            "keys",
            "list",
        ],
        &data,
        &[],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "DEBUG" && e["fields"]["message"] == "configuration file read"),
        "{err}"
    );

    // serve: TZKMS_LOG=info would log the startup summary; --log-level warn hides it.
    let server = Server::start_env(
        &data,
        &["--config", config, "--log-level", "warn"],
        &[("TZKMS_LOG", "info")],
    )
    .await
    .unwrap();
    let log_path = server.log_path.clone();
    assert!(server.terminate().await.success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("tzkms starting"), "{log}");
    assert!(!log.contains(" INFO "), "{log}");
    // The same with --log-level info does log it (the log file is appended to): the line exists.
    let server = Server::start_env(&data, &["--config", config, "--log-level", "info"], &[])
        .await
        .unwrap();
    let log_path = server.log_path.clone();
    assert!(server.terminate().await.success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("tzkms starting"), "{log}");
}

/// `tzkms keys list | head -1` in a shell with pipefail: the reader closes the pipe after one line, and
/// tzkms ends quietly (exit 0, no panic, no backtrace) with RUST_BACKTRACE unset and set.
#[tokio::test]
async fn a_reader_that_closes_the_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for i in 0..300 {
        let sk = tezos::SecretKey::generate(tezos::Curve::Ed25519);
        tzkms::startup::write_new_key(&data, &format!("k{i}"), &sk).unwrap();
    }
    for backtrace in [None, Some("1")] {
        let mut cmd = std::process::Command::new("bash");
        cmd.args([
            "-c",
            "set -o pipefail; \"$0\" --data-dir \"$1\" keys list | head -c 1 >/dev/null",
            crate::process::BIN,
            data.to_str().unwrap(),
        ]);
        cmd.env_remove("RUST_BACKTRACE");
        if let Some(v) = backtrace {
            cmd.env("RUST_BACKTRACE", v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{:?}: {stderr}", out.status);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{stderr}"
        );
    }
}
