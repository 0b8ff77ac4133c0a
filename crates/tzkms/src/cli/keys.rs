//! `tzkms keys …`: generate, import, list and show local key files.

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::Subcommand;
use tezos::{encrypted, Curve, PublicKeyHash, SecretKey};
use tzkms::backend::file::write_key_file;
use tzkms::config::Config;
use tzkms::sealing::{SealingKey, Vaults};
use tzkms::startup;
use tzkms::watermark;
use zeroize::Zeroizing;

use super::{block_on, history_note, print_import_line};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List the keys tzkms would serve.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Generate a new key file.
    Generate {
        #[arg(long, value_parser = parse_curve)]
        curve: Curve,
        /// Encrypt the key with the password from TZKMS_KEY_PASSWORD or keys.password_file.
        #[arg(long)]
        encrypt: bool,
        /// File name for the key (default: its address).
        #[arg(long)]
        alias: Option<String>,
        /// Seal the key file with this vault key (an RSA-HSM key, or a Managed HSM oct-HSM key, allowing
        /// wrapKey and unwrapKey): its URL, or its name in azure.vault_url. The file then holds only the
        /// vault's ciphertext; tzkms unseals it at each start. With --encrypt, the sealed secret is the
        /// encrypted one.
        #[arg(long, value_name = "VAULT_KEY")]
        seal_with: Option<String>,
    },
    /// Import a secret key read from standard input (never from the command line).
    Import {
        #[arg(long)]
        alias: Option<String>,
        /// Seal the key file with this vault key, as for `keys generate`.
        #[arg(long, value_name = "VAULT_KEY")]
        seal_with: Option<String>,
    },
    /// Show one key's public key and the octez-client import command.
    Show { pkh: String },
    /// Print the BLS proof of possession of a served tz4 key, as `octez-client create bls proof for
    /// <alias>` does: a tz4 `reveal`, `update_consensus_key` or `update_companion_key` carries it.
    Proof {
        pkh: String,
        /// Prove possession of this BLS public key (BLpk…) instead of the key's own, as octez-client's
        /// --override-public-key does.
        #[arg(long)]
        override_public_key: Option<String>,
    },
}

pub(crate) fn parse_curve(s: &str) -> Result<Curve, String> {
    s.parse().map_err(|e: tezos::KeyError| e.to_string())
}

pub(crate) fn keys(config: Config, cmd: &KeysCommand) -> anyhow::Result<()> {
    let data_dir = config.data_dir();
    match cmd {
        KeysCommand::List { json } => {
            let mut config = config;
            config.keys.generate_if_empty = false;
            let (keyring, report) = block_on(startup::load_keyring(&config))?;
            let keys = keyring.sorted();
            if *json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|(pkh, k)| {
                        serde_json::json!({
                            "pkh": pkh.to_string(),
                            "public_key": k.info.public_key.to_string(),
                            "curve": pkh.curve().name(),
                            "name": k.info.name,
                            "backend": k.backend.kind(),
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                outln!("{:<36}  {:<9}  {:<6}  NAME", "ADDRESS", "CURVE", "BACKEND");
                for (pkh, k) in keys {
                    outln!(
                        "{:<36}  {:<9}  {:<6}  {}",
                        pkh.to_string(),
                        pkh.curve().name(),
                        k.backend.kind(),
                        k.info.name
                    );
                }
                for s in report.skipped {
                    eprintln!("not served: {s}");
                }
            }
        }
        KeysCommand::Generate {
            curve,
            encrypt,
            alias,
            seal_with,
        } => {
            let key = SecretKey::generate(*curve);
            store_key(
                &config,
                &data_dir,
                &key,
                *encrypt,
                alias.as_deref(),
                seal_with.as_deref(),
            )?;
            // A key made here signed nothing anywhere else: its history starts now.
            watermark::floor::raise(&data_dir, &key.public_key().hash(), None, "tzkms keys generate")?;
        }
        KeysCommand::Import { alias, seal_with } => {
            let mut line = Zeroizing::new(String::new());
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the secret key from standard input")?;
            import_key_text(&config, &data_dir, &line, alias.as_deref(), seal_with.as_deref())?;
        }
        KeysCommand::Proof {
            pkh,
            override_public_key,
        } => {
            let pkh: PublicKeyHash = pkh.parse().map_err(|e| anyhow::anyhow!("{pkh}: {e}"))?;
            if pkh.curve() != Curve::Bls {
                bail!(
                    "{pkh} is not a tz4 key ({} curve): only tz4 (BLS) keys have a proof of possession; \
                     give the tz4 address of the consensus or companion key",
                    pkh.curve()
                );
            }
            let override_pk = override_public_key
                .as_deref()
                .map(|text| -> anyhow::Result<tezos::PublicKey> {
                    let pk: tezos::PublicKey = text
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--override-public-key {text}: {e}"))?;
                    if pk.curve() != Curve::Bls {
                        bail!(
                            "--override-public-key must be a BLS public key (BLpk…), not a {} key",
                            pk.curve()
                        );
                    }
                    Ok(pk)
                })
                .transpose()?;
            let mut config = config;
            config.keys.generate_if_empty = false;
            let (keyring, _) = block_on(startup::load_keyring(&config))?;
            let Some(key) = keyring.get(&pkh) else {
                bail!("{pkh} is not served from {}", data_dir.display());
            };
            let Some(proof) = key.backend.bls_prove_possession(&pkh, override_pk.as_ref()) else {
                bail!(
                    "the {} backend of {pkh} cannot make a proof of possession: only tz4 file keys can",
                    key.backend.kind()
                );
            };
            outln!("{proof}");
        }
        KeysCommand::Show { pkh } => {
            let pkh: PublicKeyHash = pkh.parse().map_err(|e| anyhow::anyhow!("{pkh}: {e}"))?;
            let mut config = config;
            config.keys.generate_if_empty = false;
            let (keyring, _) = block_on(startup::load_keyring(&config))?;
            let Some(key) = keyring.get(&pkh) else {
                bail!("{pkh} is not served from {}", data_dir.display());
            };
            outln!("address:    {pkh}");
            outln!("public key: {}", key.info.public_key);
            outln!("curve:      {}", pkh.curve());
            outln!("backend:    {} ({})", key.backend.kind(), key.info.name);
            print_import_line(&pkh, &config);
        }
    }
    Ok(())
}

/// Stores a secret key given as text (`p2sk…`, `unencrypted:…`, or encrypted `p2esk…`, kept encrypted on
/// disk) as `keys import` does; returns its address. Its history is unknown: a note says what it needs.
pub(crate) fn import_key_text(
    config: &Config,
    data_dir: &std::path::Path,
    text: &str,
    alias: Option<&str>,
    seal_with: Option<&str>,
) -> anyhow::Result<PublicKeyHash> {
    let text = text.trim();
    let text = text
        .strip_prefix("unencrypted:")
        .or_else(|| text.strip_prefix("encrypted:"))
        .unwrap_or(text);
    let pkh = if encrypted::is_encrypted(text) {
        let password = startup::key_password(config)?
            .context("this key is encrypted: set TZKMS_KEY_PASSWORD or keys.password_file")?;
        let key = encrypted::decrypt(text, &password).context("decrypting the key")?;
        startup::ensure_data_dir(data_dir)?;
        let name = alias.map_or_else(|| key.public_key().hash().to_string(), str::to_owned);
        // Kept encrypted on disk, exactly as given (and sealed on top if asked).
        let on_disk = match seal_with {
            Some(_) => seal(config, seal_with, Zeroizing::new(format!("encrypted:{text}")))?,
            None => Zeroizing::new(text.to_owned()),
        };
        let path = write_key_file(data_dir, &name, &on_disk)?;
        report_key(config, &key, &path);
        key.public_key().hash()
    } else {
        let key: SecretKey = text.parse().context("parsing the secret key")?;
        store_key(config, data_dir, &key, false, alias, seal_with)?;
        key.public_key().hash()
    };
    history_note(&pkh);
    Ok(pkh)
}

pub(crate) fn store_key(
    config: &Config,
    data_dir: &std::path::Path,
    key: &SecretKey,
    encrypt: bool,
    alias: Option<&str>,
    seal_with: Option<&str>,
) -> anyhow::Result<()> {
    startup::ensure_data_dir(data_dir)?;
    let text = if encrypt {
        let password = startup::key_password(config)?
            .context("--encrypt needs a password: set TZKMS_KEY_PASSWORD or keys.password_file")?;
        if password.is_empty() {
            bail!("refusing to encrypt with an empty password");
        }
        let text = Zeroizing::new(encrypted::encrypt(key, &password));
        match seal_with {
            Some(_) => Zeroizing::new(format!("encrypted:{}", text.as_str())),
            None => text,
        }
    } else if seal_with.is_some() {
        Zeroizing::new(format!("unencrypted:{}", key.to_b58().as_str()))
    } else {
        key.to_b58()
    };
    let text = seal(config, seal_with, text)?;
    let pkh = key.public_key().hash();
    let name = alias.map_or_else(|| pkh.to_string(), str::to_owned);
    let path = write_key_file(data_dir, &name, &text)?;
    report_key(config, key, &path);
    Ok(())
}

/// The text a key file holds: `secret_text` itself, or with `--seal-with`, the vault's ciphertext of it
/// (`sealed:…`), after checking that the vault unseals it back to the same text.
pub(crate) fn seal(
    config: &Config,
    seal_with: Option<&str>,
    secret_text: Zeroizing<String>,
) -> anyhow::Result<Zeroizing<String>> {
    let Some(seal_with) = seal_with else {
        return Ok(secret_text);
    };
    let key = SealingKey::parse(seal_with, config)?;
    block_on(async {
        let mut vaults = Vaults::new(config);
        let sealed = vaults
            .seal(&key, &secret_text)
            .await
            .with_context(|| format!("sealing with {seal_with}"))?;
        // Proves now, not at the next start, that this identity can unseal what it wrote.
        let back = vaults
            .unseal(&sealed)
            .await
            .with_context(|| format!("unsealing what {seal_with} sealed"))?;
        if back.as_str() != secret_text.as_str() {
            bail!(
                "the vault unsealed {} to different bytes: nothing written",
                sealed.kid()
            );
        }
        eprintln!("sealed by {}", sealed.kid());
        Ok(Zeroizing::new(sealed.to_text()))
    })
}

pub(crate) fn report_key(config: &Config, key: &SecretKey, path: &std::path::Path) {
    let pkh = key.public_key().hash();
    outln!("{pkh}");
    outln!("public key: {}", key.public_key());
    outln!("key file:   {}", path.display());
    print_import_line(&pkh, config);
}
