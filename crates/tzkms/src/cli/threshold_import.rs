//! `tzkms threshold import`: writes this machine's share file from the JSON of `octez-client share bls
//! secret key … between N shares with threshold M` (or `tzkms threshold split`).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use tezos::encrypted;
use tezos::threshold::{self, ShareId, ShareSet};
use tzkms::config::Config;
use tzkms::startup;
use tzkms::threshold::shares;

#[derive(Debug, clap::Args)]
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
    let existing = shares::load_all(&data_dir, startup::key_password(config)?.as_ref())
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
        format!("encrypted:{}", encrypted::encrypt(share.secret_key(), &password))
    } else {
        format!("unencrypted:{}", share.to_b58().as_str())
    };
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

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ThresholdCommand {
    /// Write this machine's share file from the JSON of a split (`octez-client share bls secret key …`
    /// or `tzkms threshold split`).
    Import(ImportArgs),
}

pub(crate) fn threshold(config: Config, cmd: &ThresholdCommand) -> anyhow::Result<()> {
    match cmd {
        ThresholdCommand::Import(args) => import(&config, args),
    }
}
