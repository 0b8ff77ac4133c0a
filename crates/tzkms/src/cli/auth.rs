//! `tzkms auth …`: add, list and remove the authorized keys of `auth.authorized_keys_file` (octez-signer's
//! JSON format) without editing it by hand. A running signer applies the change on its next reload.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use tezos::{PublicKey, PublicKeyHash};
use tzkms::config::Config;

#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// Authorize a public key (edpk…, sppk…, p2pk…, BLpk…): requests signed with it are accepted once
    /// auth.required is on. Written to auth.authorized_keys_file.
    Add {
        /// The public key, as `octez-client show address <alias>` prints it.
        public_key: String,
        /// A name for it (default: its address).
        #[arg(long)]
        name: Option<String>,
    },
    /// The authorized keys: from auth.authorized_keys_file and auth.authorized_keys.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an authorized key from auth.authorized_keys_file, by address (tz…) or name.
    Remove { key: String },
}

/// One entry of an octez-signer `authorized_keys` file, kept as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    name: String,
    value: String,
}

impl Entry {
    fn public_key(&self) -> anyhow::Result<PublicKey> {
        let text = self.value.strip_prefix("unencrypted:").unwrap_or(&self.value);
        text.parse()
            .map_err(|e| anyhow::anyhow!("entry {:?}: {text:?} is not a public key: {e}", self.name))
    }
}

pub(crate) fn auth(config: Config, config_path: Option<&Path>, cmd: &AuthCommand) -> anyhow::Result<()> {
    match cmd {
        AuthCommand::List { json } => list(&config, *json),
        AuthCommand::Add { public_key, name } => {
            let file = authorized_keys_file(&config, config_path)?;
            let pk: PublicKey = public_key.trim().parse().map_err(|e| {
                anyhow::anyhow!(
                    "{public_key:?} is not a public key: {e}. Give the edpk…/sppk…/p2pk…/BLpk… that \
                     `octez-client show address <alias>` prints on the baker host"
                )
            })?;
            let pkh = pk.hash();
            let name = name.clone().unwrap_or_else(|| pkh.to_string());
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                bail!("--name {name:?}: a name must be non-empty printable text");
            }
            if config.auth.authorized_keys.iter().any(|k| k.hash() == pkh) {
                bail!("{pkh} is already authorized in auth.authorized_keys of the configuration file; nothing was changed");
            }
            let mut entries = read(&file)?;
            for e in &entries {
                if e.public_key()?.hash() == pkh {
                    bail!(
                        "{pkh} is already authorized in {} (as {:?}); nothing was changed",
                        file.display(),
                        e.name
                    );
                }
                if e.name == name {
                    bail!(
                        "{} already has a key named {name:?}; choose another --name, or remove that one first \
                         (tzkms auth remove {name:?})",
                        file.display()
                    );
                }
            }
            entries.push(Entry {
                name: name.clone(),
                value: pk.to_string(),
            });
            write(&config, &file, &entries)?;
            outln!("added {pkh} ({name}) to {}", file.display());
            after_change(&config);
            Ok(())
        }
        AuthCommand::Remove { key } => {
            let file = authorized_keys_file(&config, config_path)?;
            let mut entries = read(&file)?;
            let wanted: Option<PublicKeyHash> = key.parse().ok();
            let mut removed = Vec::new();
            let mut kept = Vec::new();
            for e in entries.drain(..) {
                let hash = e.public_key()?.hash();
                if Some(hash) == wanted || e.name == *key {
                    removed.push((hash, e.name));
                } else {
                    kept.push(e);
                }
            }
            if removed.is_empty() {
                if let Some(pkh) =
                    wanted.filter(|p| config.auth.authorized_keys.iter().any(|k| k.hash() == *p))
                {
                    bail!(
                        "{pkh} is authorized in auth.authorized_keys of the configuration file, not in {}: \
                         remove it there, then reload",
                        file.display()
                    );
                }
                bail!(
                    "no authorized key {key:?} (address or name) in {}; `tzkms auth list` shows them",
                    file.display()
                );
            }
            write(&config, &file, &kept)?;
            for (pkh, name) in removed {
                outln!("removed {pkh} ({name}) from {}", file.display());
            }
            after_change(&config);
            Ok(())
        }
    }
}

/// The file `auth add`/`remove` edit: the one the signer reads, or an error saying how to configure it.
fn authorized_keys_file(config: &Config, config_path: Option<&Path>) -> anyhow::Result<PathBuf> {
    match &config.auth.authorized_keys_file {
        Some(file) => Ok(file.clone()),
        None => bail!(
            "{} sets no auth.authorized_keys_file: add `authorized_keys_file = \"/etc/tzkms/authorized_keys\"` \
             under [auth] (any path the signer can read), then run this again; `tzkms auth` edits that file",
            config_path.map_or_else(
                || "no configuration file was given (--config), so the configuration".to_string(),
                |p| p.display().to_string()
            )
        ),
    }
}

/// The file's entries; a missing file has none.
fn read(file: &Path) -> anyhow::Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not an octez-signer authorized_keys file (a JSON list of {{\"name\", \"value\"}}); fix or \
             move it aside",
            file.display()
        )
    })
}

/// Replaces `file` with `entries` atomically (a temporary file beside it, synced, then renamed), keeping
/// the mode and owner of the file it replaces (0644 for a new one: public keys, readable by the service
/// user whoever runs this). Before anything changes, the result is checked as a reload would check it.
fn write(config: &Config, file: &Path, entries: &[Entry]) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .context("the authorized keys file has no file name")?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let old = std::fs::metadata(file).ok();
    let mode = old.as_ref().map_or(0o644, |m| m.mode() & 0o7777);
    let mut text = serde_json::to_string_pretty(entries)?;
    text.push('\n');
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        if let Some(m) = &old {
            let now = std::fs::metadata(&tmp)?;
            if (now.uid(), now.gid()) != (m.uid(), m.gid()) {
                std::os::unix::fs::chown(&tmp, Some(m.uid()), Some(m.gid())).with_context(|| {
                    format!(
                        "keeping the owner ({}:{}) of {}: run this as that user or as root",
                        m.uid(),
                        m.gid(),
                        file.display()
                    )
                })?;
            }
        }
        // What the next reload will read: refuse a change that would make it fail (the old keys would
        // then stay in force).
        let mut auth = config.auth.clone();
        auth.authorized_keys_file = Some(tmp.clone());
        tzkms::auth::Authenticator::from_config(&auth).map_err(|e| {
            anyhow::anyhow!(
                "nothing was changed: with this change the signer's next reload would fail ({e}); {}",
                match &e {
                    tzkms::auth::AuthConfigError::NoKeys =>
                        "add another key first, or set auth.required = false",
                    tzkms::auth::AuthConfigError::UnknownBinding(_) =>
                        "remove its [auth.may_sign] entry from the configuration file first",
                    _ => "fix the file",
                }
            )
        })?;
        std::fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn after_change(config: &Config) {
    outln!("a running signer applies it on reload: systemctl reload tzkms (or kill -HUP <pid>)");
    if !config.auth.required {
        eprintln!(
            "note: auth.required is false: requests are not authenticated until it is set to true under [auth]"
        );
    }
}

fn list(config: &Config, json: bool) -> anyhow::Result<()> {
    // (address, public key, name, source)
    let mut rows: Vec<(PublicKeyHash, PublicKey, String, String)> = config
        .auth
        .authorized_keys
        .iter()
        .map(|pk| {
            (
                pk.hash(),
                pk.clone(),
                String::new(),
                "auth.authorized_keys".to_string(),
            )
        })
        .collect();
    if let Some(file) = &config.auth.authorized_keys_file {
        for e in read(file)? {
            let pk = e.public_key()?;
            rows.push((pk.hash(), pk, e.name, file.display().to_string()));
        }
    }
    let may_sign = |pkh: &PublicKeyHash| -> Option<Vec<String>> {
        config
            .auth
            .may_sign
            .get(pkh)
            .map(|l| l.0.iter().map(ToString::to_string).collect())
    };
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(pkh, pk, name, source)| {
                serde_json::json!({
                    "pkh": pkh.to_string(),
                    "public_key": pk.to_string(),
                    "name": name,
                    "source": source,
                    "may_sign": may_sign(pkh),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    outln!("{:<36}  {:<20}  {:<24}  SOURCE", "ADDRESS", "NAME", "MAY SIGN");
    for (pkh, _, name, source) in &rows {
        let bound = may_sign(pkh).map_or_else(|| "any key".to_string(), |l| l.join(","));
        let name = if name.is_empty() { "-" } else { name };
        outln!("{:<36}  {name:<20}  {bound:<24}  {source}", pkh.to_string());
    }
    if !config.auth.required {
        eprintln!(
            "note: auth.required is false: these keys are not asked for (requests are not authenticated)"
        );
    }
    Ok(())
}
