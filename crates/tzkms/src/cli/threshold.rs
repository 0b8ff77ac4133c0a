//! `tzkms threshold …`: split a tz4 key into Shamir shares for threshold cosigning, and import this
//! machine's share (see docs/threshold.md).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tezos::encrypted;
use tezos::threshold::{self, ShareId, ShareSet, ThresholdError};
use tezos::{Curve, PublicKeyHash, SecretKey};
use tzkms::backend::file::{self, KEYS_DIR};
use tzkms::backend::sealed::Unsealed;
use tzkms::config::Config;
use tzkms::startup;
use tzkms::threshold::shares;
use zeroize::Zeroizing;

#[derive(Debug, Subcommand)]
pub(crate) enum ThresholdCommand {
    /// Split a tz4 secret key into N shares, any M of which sign for it, and print the same JSON as
    /// `octez-client share bls secret key <sk> between <N> shares with threshold <M>` (standard output);
    /// each share's public key goes to standard error. The JSON holds every share's secret: hand each
    /// share to its machine, then delete the JSON and the original key.
    Split(SplitArgs),
    /// Write this machine's share file (`<data_dir>/shares/<tz4>.share`) from the JSON of a split
    /// (`tzkms threshold split` or `octez-client share bls secret key …`): one share per machine.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SplitArgs {
    /// The key to split: a key file of the data directory, by name or tz4 address (as `keys show`).
    #[arg(
        long,
        required_unless_present = "secret_key_file",
        conflicts_with = "secret_key_file"
    )]
    key: Option<String>,
    /// Read the secret key from this file instead (`-`: standard input), in key-file syntax (`BLsk…`,
    /// `unencrypted:BLsk…`, or encrypted with TZKMS_KEY_PASSWORD / keys.password_file). Never give a
    /// secret on the command line: other users see it in `ps`.
    #[arg(long, value_name = "PATH")]
    secret_key_file: Option<PathBuf>,
    /// N, the number of shares (ids 1..=N, at most 127).
    #[arg(long)]
    shares: u8,
    /// M, the number of shares needed to sign. Must exceed N/2 unless --allow-non-majority is given.
    #[arg(long)]
    threshold: u8,
    /// Allow M <= N/2. Cosigners refuse to run such a split: two disjoint groups of M shares could
    /// each sign a different payload at one level and round. Only for multisig accounts (not baking).
    #[arg(long)]
    allow_non_majority: bool,
}

pub(crate) fn threshold(config: Config, cmd: &ThresholdCommand) -> anyhow::Result<()> {
    match cmd {
        ThresholdCommand::Split(args) => split(&config, args),
        ThresholdCommand::Import(args) => import(&config, args),
    }
}

fn split(config: &Config, args: &SplitArgs) -> anyhow::Result<()> {
    match threshold::check_parameters(args.threshold, args.shares) {
        Err(e @ ThresholdError::NotMajority { .. }) if !args.allow_non_majority => {
            bail!("{e}. (--allow-non-majority permits it for a multisig account that never bakes.)")
        }
        Err(ThresholdError::NotMajority { .. }) => {}
        other => other?,
    }
    let password = startup::key_password(config)?;
    let key = match (&args.key, &args.secret_key_file) {
        (_, Some(path)) if path == Path::new("-") => {
            let mut text = Zeroizing::new(String::new());
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the secret key from standard input")?;
            file::parse_key_text(
                Path::new("standard input"),
                &text,
                password.as_ref(),
                &Unsealed::default(),
            )?
        }
        (_, Some(path)) => file::read_key_file(path, password.as_ref(), &unseal(config, [path.clone()])?)?,
        (Some(name), None) => find_key(config, name, password.as_ref())?,
        (None, None) => {
            bail!("give the key to split: --key <name or tz4 address> or --secret-key-file <path>")
        }
    };
    if key.curve() != Curve::Bls {
        bail!(
            "{} is not a tz4 key ({} curve): only tz4 (BLS) keys can be split into threshold shares",
            key.public_key().hash(),
            key.curve()
        );
    }
    let set = threshold::split(&key, args.shares, args.threshold)?;
    let json = Zeroizing::new(serde_json::to_string_pretty(&set)?);
    outln!("{}", json.as_str());
    eprintln!(
        "{}: {}-of-{} threshold shares (the JSON on standard output holds every share's secret key)",
        set.public_key_hash(),
        set.threshold(),
        set.share_count()
    );
    for (id, pk) in set.share_public_keys() {
        eprintln!("share {id}: public key {pk}");
    }
    Ok(())
}

/// A key of the data directory: `keys/<name>.key`, else the key file whose key has address `name`.
fn find_key(config: &Config, name: &str, password: Option<&Zeroizing<Vec<u8>>>) -> anyhow::Result<SecretKey> {
    let dir = config.data_dir().join(KEYS_DIR);
    if !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.') {
        let path = dir.join(format!("{name}.key"));
        if path.exists() {
            let unsealed = unseal(config, [path.clone()])?;
            return Ok(file::read_key_file(&path, password, &unsealed)?);
        }
    }
    let not_found = || anyhow::anyhow!("no key named {name} in {}: see `tzkms keys list`", dir.display());
    let Ok(pkh) = name.parse::<PublicKeyHash>() else {
        return Err(not_found());
    };
    let entries = std::fs::read_dir(&dir).map_err(|_| not_found())?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    paths.sort();
    let unsealed = unseal(config, paths.clone())?;
    let mut unread = Vec::new();
    for path in paths {
        match file::read_key_file(&path, password, &unsealed) {
            Ok(key) if key.public_key().hash() == pkh => return Ok(key),
            Ok(_) => {}
            Err(e) => unread.push(e.to_string()),
        }
    }
    if unread.is_empty() {
        Err(not_found())
    } else {
        bail!(
            "{} (key files that could not be read: {})",
            not_found(),
            unread.join("; ")
        )
    }
}

/// The secrets of the sealed files among `paths`, unsealed by the vault (one call each), so a sealed key
/// file splits like any other. Unreadable files are left to the reader to report.
fn unseal(config: &Config, paths: impl IntoIterator<Item = PathBuf>) -> anyhow::Result<Unsealed> {
    let texts: Vec<(PathBuf, Zeroizing<String>)> = paths
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, Zeroizing::new(t))))
        .filter(|(_, t)| tzkms::backend::sealed::SealedSecret::is_sealed(t.trim()))
        .collect();
    if texts.is_empty() {
        return Ok(Unsealed::default());
    }
    super::block_on(tzkms::sealing::unseal_all(config, texts))
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The JSON file the split printed (`-`: standard input). It holds every share: keep it offline and
    /// delete it once each machine has imported its own.
    pub json: PathBuf,
    /// The id of the share this machine keeps (1..=N).
    #[arg(long)]
    pub id: u8,
    /// Encrypt the share with the password from TZKMS_KEY_PASSWORD or keys.password_file.
    #[arg(long)]
    pub encrypt: bool,
    /// Seal the share's secret with this vault key, as `keys import --seal-with` does (an RSA-HSM key, or
    /// a Managed HSM oct-HSM key, allowing wrapKey and unwrapKey): its URL, or its name in
    /// azure.vault_url. The share file then holds only the vault's ciphertext; tzkms unseals it at each
    /// start. With --encrypt, the sealed secret is the encrypted one.
    #[arg(long, value_name = "VAULT_KEY")]
    pub seal_with: Option<String>,
}

pub(crate) fn import(config: &Config, args: &ImportArgs) -> anyhow::Result<()> {
    let data_dir = config.data_dir();
    let mut text = zeroize::Zeroizing::new(String::new());
    if args.json.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the share JSON from standard input")?;
    } else {
        *text = std::fs::read_to_string(&args.json)
            .with_context(|| format!("reading {}", args.json.display()))?;
    }
    let set: ShareSet = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not the JSON of `octez-client share bls secret key … between N shares with threshold M`: {e}",
            args.json.display()
        )
    })?;
    let (m, n) = (set.threshold(), set.share_count());
    threshold::check_parameters(m, n)?;
    let id = ShareId::new(args.id)?;
    let Some(share) = set.share(id) else {
        let ids: Vec<String> = set.shares().iter().map(|s| s.id.to_string()).collect();
        bail!(
            "share {} is not in {}: it holds shares {}; give one of those to --id",
            args.id,
            args.json.display(),
            ids.join(", ")
        );
    };
    startup::ensure_data_dir(&data_dir)?;
    let group = set.public_key();
    let existing = shares::load_all(
        &data_dir,
        startup::key_password(config)?.as_ref(),
        &Unsealed::default(),
    )
    .unwrap_or_default()
    .into_iter()
    .find(|s| &s.group == group);
    if let Some(existing) = existing {
        bail!(
            "{} already holds share {} of {}: one machine holds one share of a key",
            existing.path.display(),
            existing.share.id,
            group.hash()
        );
    }
    let secret_text = if args.encrypt {
        let password = startup::key_password(config)?.ok_or_else(|| {
            anyhow::anyhow!("--encrypt needs a password: set TZKMS_KEY_PASSWORD or keys.password_file")
        })?;
        Zeroizing::new(format!(
            "encrypted:{}",
            encrypted::encrypt(share.secret_key(), &password)
        ))
    } else {
        Zeroizing::new(format!("unencrypted:{}", share.to_b58().as_str()))
    };
    let secret_text = super::keys::seal(config, args.seal_with.as_deref(), secret_text)?;
    let path = shares::write(&data_dir, group, m, n, share, &secret_text)?;
    outln!("wrote {} (share {id} of {n}, threshold {m})", path.display());
    outln!("group key:          {} ({})", group.hash(), group);
    outln!("share public key:   {}", share.public_key());
    outln!(
        "on the coordinator: [[threshold.groups.cosigners]] id = {id}, share_public_key = \"{}\"",
        share.public_key()
    );
    super::history_note(&group.hash());
    Ok(())
}
