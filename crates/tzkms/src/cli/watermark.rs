//! `tzkms watermark …`: show, set, export, import high watermarks and vouch for keys with a floor.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use tezos::PublicKeyHash;
use tzkms::config::Config;
use tzkms::startup;
use tzkms::watermark::{self, interchange};

use super::block_on;

#[derive(Debug, Subcommand)]
pub(crate) enum WatermarkCommand {
    /// Show the marks (safe while tzkms runs).
    Show {
        /// Which store: this instance's file, or the shared table of [watermark.table].
        #[arg(long, value_enum, default_value = "local")]
        store: StoreChoice,
        #[arg(long)]
        pkh: Option<String>,
        #[arg(long)]
        chain: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Raise one mark by hand (e.g. before moving a key from another signer). Never lowers a mark.
    Set {
        #[arg(long, value_enum, default_value = "local")]
        store: StoreChoice,
        #[arg(long)]
        pkh: String,
        #[arg(long)]
        chain: String,
        /// block, preattestation or attestation; repeat or omit for all three.
        #[arg(long)]
        kind: Vec<String>,
        #[arg(long)]
        level: u32,
        #[arg(long, default_value_t = 0)]
        round: u32,
    },
    /// Write every mark in tzkms's JSON interchange format (safe while tzkms runs).
    Export {
        #[arg(long, value_enum, default_value = "local")]
        store: StoreChoice,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Vouch for a key that has no marks here: only levels above LEVEL are signed until it has marks of
    /// its own. For a key moved here without its marks (set LEVEL to the current head level), or, with
    /// --level 0, a key that never signed. Never lowers a floor; works while tzkms runs.
    Floor {
        pkh: String,
        #[arg(long)]
        level: u32,
    },
    /// Import marks; only raises, never lowers.
    Import {
        #[arg(long, value_enum, default_value = "local")]
        store: StoreChoice,
        /// Format of the source.
        #[arg(long, value_enum, default_value = "tzkms")]
        from: ImportFormat,
        /// A tzkms export file, an octez-signer base directory, or Signatory's watermark_v2 directory
        /// or one of its <chain>.json files.
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreChoice {
    /// `<data_dir>/watermarks.json`
    Local,
    /// The Azure Table of `[watermark.table]` (conditional writes: safe while instances run)
    Table,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ImportFormat {
    Tzkms,
    Octez,
    Signatory,
}

pub(crate) fn watermark(config: Config, cmd: &WatermarkCommand) -> anyhow::Result<()> {
    match cmd {
        WatermarkCommand::Show {
            store,
            pkh,
            chain,
            json,
        } => {
            let pkh: Option<PublicKeyHash> = pkh.as_deref().map(str::parse).transpose()?;
            let chain: Option<tezos::ChainId> = chain.as_deref().map(str::parse).transpose()?;
            let mut marks = read_marks(&config, *store)?;
            marks.retain(|k, _| pkh.is_none_or(|p| p == k.pkh) && chain.is_none_or(|c| c == k.chain));
            if *json {
                out!("{}", interchange::encode(&marks));
            } else if marks.is_empty() {
                outln!("no marks");
            } else {
                outln!(
                    "{:<15}  {:<36}  {:<14}  {:>10}  {:>5}  signature",
                    "chain",
                    "pkh",
                    "kind",
                    "level",
                    "round"
                );
                for (k, m) in &marks {
                    outln!(
                        "{:<15}  {:<36}  {:<14}  {:>10}  {:>5}  {}",
                        k.chain.to_string(),
                        k.pkh.to_string(),
                        k.kind.name(),
                        m.level,
                        watermark::round_text(m.round),
                        if m.signature.is_some() { "stored" } else { "none" }
                    );
                }
            }
        }
        WatermarkCommand::Export { store, out } => {
            let text = interchange::encode(&read_marks(&config, *store)?);
            match out {
                Some(path) => {
                    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
                }
                None => out!("{text}"),
            }
        }
        WatermarkCommand::Set {
            store,
            pkh,
            chain,
            kind,
            level,
            round,
        } => {
            let pkh: PublicKeyHash = pkh.parse()?;
            let chain: tezos::ChainId = chain.parse()?;
            let kinds: Vec<tezos::ConsensusKind> = if kind.is_empty() {
                tezos::ConsensusKind::ALL.to_vec()
            } else {
                kind.iter()
                    .map(|k| k.parse().map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?
            };
            let incoming = kinds
                .into_iter()
                .map(|kind| {
                    (
                        watermark::MarkKey { chain, pkh, kind },
                        watermark::Mark {
                            level: tezos::Level(*level),
                            round: tezos::Round(*round),
                            // No payload was signed here: nothing at or below this mark will be.
                            hash: [0; 32],
                            signature: None,
                        },
                    )
                })
                .collect();
            change_marks(&config, *store, incoming)?;
        }
        WatermarkCommand::Floor { pkh, level } => {
            let pkh: PublicKeyHash = pkh.parse().map_err(|e| anyhow::anyhow!("{pkh}: {e}"))?;
            let data_dir = config.data_dir();
            startup::existing_data_dir(&data_dir)?;
            match watermark::floor::raise(&data_dir, &pkh, Some(tezos::Level(*level)), "tzkms watermark floor")? {
                watermark::floor::Raised::Set => outln!(
                    "floor of {pkh} set to level {level}: consensus is signed only above it until the key has marks here"
                ),
                watermark::floor::Raised::Kept(existing) => outln!(
                    "floor of {pkh} kept at {}: it is already at or above level {level}",
                    existing.map_or_else(|| "none".to_owned(), |l| format!("level {l}"))
                ),
            }
        }
        WatermarkCommand::Import { store, from, path } => {
            let incoming = match from {
                ImportFormat::Tzkms => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    interchange::decode(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                }
                ImportFormat::Octez => interchange::import_octez(path).map_err(anyhow::Error::msg)?,
                ImportFormat::Signatory => interchange::import_signatory(path).map_err(anyhow::Error::msg)?,
            };
            change_marks(&config, *store, incoming)?;
        }
    }
    Ok(())
}

/// The shared table store of the configuration.
pub(crate) async fn shared_store(config: &Config) -> anyhow::Result<watermark::azure_table::TableStore> {
    let table = config
        .watermark
        .table
        .as_ref()
        .context("--store table needs a [watermark.table] section in the configuration")?;
    startup::table_store(config, table).await
}

pub(crate) fn read_marks(config: &Config, store: StoreChoice) -> anyhow::Result<interchange::Marks> {
    match store {
        StoreChoice::Local => {
            let data_dir = config.data_dir();
            startup::existing_data_dir(&data_dir)?;
            if !data_dir.join(watermark::file::STORE_FILE).exists()
                && !data_dir.join(watermark::file::MARKER_FILE).exists()
            {
                bail!(
                    "{} has no watermark store: no signer has run with this data directory. Is it the one the \
                     signer uses? It comes from {}",
                    data_dir.display(),
                    startup::DATA_DIR_SOURCES
                );
            }
            Ok(watermark::file::read(&data_dir)?)
        }
        StoreChoice::Table => block_on(async { Ok(shared_store(config).await?.all().await?) }),
    }
}

/// Raises marks: in the shared table with conditional writes (safe while instances run: a running
/// instance re-reads on its next conflicting write), or in the local store while holding the data
/// directory's lock (a running server holds it, and its in-memory marks would not see the change).
pub(crate) fn change_marks(
    config: &Config,
    store: StoreChoice,
    incoming: interchange::Marks,
) -> anyhow::Result<()> {
    if store == StoreChoice::Table {
        let total = incoming.len();
        let raised = block_on(async {
            let table = shared_store(config).await?;
            let mut raised = 0;
            for (key, mark) in &incoming {
                if table.raise(key, mark).await? {
                    outln!("raised {key} to level {} round {}", mark.level, mark.round);
                    raised += 1;
                }
            }
            anyhow::Ok(raised)
        })?;
        outln!("{raised} of {total} marks raised in the shared table; the others were already at or above");
        return Ok(());
    }
    let data_dir = &config.data_dir();
    startup::ensure_data_dir(data_dir)?;
    let _lock = startup::DataDirLock::acquire(data_dir)
        .context("changing marks needs tzkms stopped (show and export work while it runs)")?;
    let mut marks = watermark::file::read(data_dir)?;
    let total = incoming.len();
    let raised = interchange::raise(&mut marks, incoming);
    if !raised.is_empty() {
        watermark::file::write(data_dir, &marks)?;
        watermark::file::mark_initialized(data_dir)?;
    }
    for key in &raised {
        let m = &marks[key];
        outln!("raised {key} to level {} round {}", m.level, m.round);
    }
    outln!(
        "{} of {total} marks raised; the others were already at or above",
        raised.len()
    );
    Ok(())
}
