//! Watermark files: tzkms's own versioned JSON format (the store's snapshot and `watermark export`/
//! `import`, and its entries on one line each in the store's log), and importers for the files of the
//! signers bakers migrate from (octez-signer, Signatory).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tezos::{base58, ChainId, ConsensusKind, Level, PublicKeyHash, Round, Signature};

use super::{Mark, MarkKey, WHOLE_LEVEL};

pub const FORMAT: &str = "tzkms-watermarks";
pub const VERSION: u32 = 1;

/// The document: `{"format":"tzkms-watermarks","version":1,"marks":[…]}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: String,
    version: u32,
    marks: Vec<Entry>,
}

/// One mark. `hash` is the hex BLAKE2b-256 of the payload signed at (level, round); `signature` the
/// base58 signature returned for it, when known.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    chain: String,
    pkh: String,
    kind: String,
    level: u32,
    round: u32,
    hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

pub type Marks = BTreeMap<MarkKey, Mark>;

pub fn encode(marks: &Marks) -> String {
    let entries: Vec<Entry> = marks.iter().map(|(k, m)| entry(k, m)).collect();
    document_text(entries.iter())
}

fn entry(k: &MarkKey, m: &Mark) -> Entry {
    Entry {
        chain: k.chain.to_string(),
        pkh: k.pkh.to_string(),
        kind: k.kind.name().into(),
        level: m.level.0,
        round: m.round.0,
        hash: hex::encode(m.hash),
        signature: m.signature.map(|s| s.to_string()),
    }
}

fn document_text<'a>(entries: impl Iterator<Item = &'a Entry>) -> String {
    #[derive(Serialize)]
    struct DocumentRef<'a> {
        format: &'a str,
        version: u32,
        marks: Vec<&'a Entry>,
    }
    let doc = DocumentRef {
        format: FORMAT,
        version: VERSION,
        marks: entries.collect(),
    };
    let mut text = serde_json::to_string_pretty(&doc).expect("marks serialise");
    text.push('\n');
    text
}

/// One mark as a single line of JSON (no newline), the form of the file store's log records.
pub fn encode_entry(key: &MarkKey, mark: &Mark) -> String {
    serde_json::to_string(&entry(key, mark)).expect("a mark serialises")
}

/// A mark from its single-line JSON form ([`encode_entry`]).
pub fn decode_entry(text: &str) -> Result<(MarkKey, Mark), String> {
    let e: Entry = serde_json::from_str(text).map_err(|e| format!("not a mark: {e}"))?;
    parse_entry(e)
}

pub fn decode(text: &str) -> Result<Marks, String> {
    let doc: Document = serde_json::from_str(text).map_err(|e| format!("not a {FORMAT} document: {e}"))?;
    if doc.format != FORMAT {
        return Err(format!("format is {:?}, expected {FORMAT:?}", doc.format));
    }
    if doc.version != VERSION {
        return Err(format!(
            "version {} is not supported (this tzkms reads version {VERSION})",
            doc.version
        ));
    }
    let mut marks = Marks::new();
    for (i, e) in doc.marks.into_iter().enumerate() {
        let name = format!("mark {i} ({} {} {})", e.kind, e.pkh, e.chain);
        let (key, mark) = parse_entry(e).map_err(|err| format!("{name}: {err}"))?;
        if marks.insert(key, mark).is_some() {
            return Err(format!("{name}: appears twice"));
        }
    }
    Ok(marks)
}

fn parse_entry(e: Entry) -> Result<(MarkKey, Mark), String> {
    let key = MarkKey {
        chain: e.chain.parse().map_err(|err| format!("chain: {err}"))?,
        pkh: e.pkh.parse().map_err(|err| format!("pkh: {err}"))?,
        kind: e.kind.parse()?,
    };
    let mark = Mark {
        level: Level(e.level),
        round: Round(e.round),
        hash: parse_hash(&e.hash)?,
        signature: e
            .signature
            .as_deref()
            .map(str::parse::<Signature>)
            .transpose()
            .map_err(|err| format!("signature: {err}"))?,
    };
    Ok((key, mark))
}

/// A payload hash as hex or as `vh…` base58.
fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let bytes = if text.starts_with("vh") {
        base58::decode(base58::PAYLOAD_HASH, text).map_err(|e| format!("hash: {e}"))?
    } else {
        hex::decode(text).map_err(|e| format!("hash: {e}"))?
    };
    bytes.try_into().map_err(|_| "hash is not 32 bytes".to_string())
}

/// Merges `incoming` into `marks`, only ever raising: an incoming mark replaces an existing one only if
/// it is strictly higher. Returns the keys raised or added.
pub fn raise(marks: &mut Marks, incoming: Marks) -> Vec<MarkKey> {
    let mut changed = Vec::new();
    for (key, mark) in incoming {
        let higher = marks
            .get(&key)
            .is_none_or(|old| (mark.level, mark.round) > (old.level, old.round));
        if higher {
            marks.insert(key, mark);
            changed.push(key);
        }
    }
    changed
}

fn insert_max(marks: &mut Marks, key: MarkKey, mark: Mark) {
    let keep_old = marks
        .get(&key)
        .is_some_and(|old| (old.level, old.round) >= (mark.level, mark.round));
    if !keep_old {
        marks.insert(key, mark);
    }
}

/// octez-signer's `<base_dir>/{block,preattestation,attestation}_high_watermarks` files:
/// `{ "<chain>": { "<pkh>": { "level", "round"?, "hash", "signature"? } } }`. Missing files are skipped. A
/// mark without a round covers its whole level ([`WHOLE_LEVEL`]), as octez-signer treats it.
pub fn import_octez(base_dir: &Path) -> Result<Marks, String> {
    #[derive(Deserialize)]
    struct OctezMark {
        level: i64,
        #[serde(default)]
        round: Option<i64>,
        hash: String,
        #[serde(default)]
        signature: Option<String>,
    }
    let mut marks = Marks::new();
    let mut found = 0;
    for kind in ConsensusKind::ALL {
        let path = base_dir.join(format!("{}_high_watermarks", kind.name()));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        found += 1;
        let at = |what: String| format!("{}: {what}", path.display());
        let chains: BTreeMap<String, BTreeMap<String, OctezMark>> = serde_json::from_str(&text)
            .map_err(|e| at(format!("not an octez-signer watermark file: {e}")))?;
        for (chain, keys) in chains {
            let chain: ChainId = chain.parse().map_err(|e| at(format!("chain {chain}: {e}")))?;
            for (pkh, m) in keys {
                let pkh: PublicKeyHash = pkh.parse().map_err(|e| at(format!("{pkh}: {e}")))?;
                let level =
                    u32::try_from(m.level).map_err(|_| at(format!("{pkh}: bad level {}", m.level)))?;
                let hash = parse_hash(&m.hash).map_err(|e| at(format!("{pkh}: {e}")))?;
                let signature = m
                    .signature
                    .as_deref()
                    .map(str::parse::<Signature>)
                    .transpose()
                    .map_err(|e| at(format!("{pkh}: signature: {e}")))?;
                let mark = match m.round {
                    Some(round) => Mark {
                        level: Level(level),
                        round: Round(
                            u32::try_from(round).map_err(|_| at(format!("{pkh}: bad round {round}")))?,
                        ),
                        hash,
                        signature,
                    },
                    // No round (a pre-Tenderbake mark): octez-signer refuses every other block at this
                    // level, whatever its round, so the mark covers the whole level. Its signature is
                    // dropped: no real request sits at that position to be answered with it.
                    None => Mark {
                        level: Level(level),
                        round: WHOLE_LEVEL,
                        hash,
                        signature: None,
                    },
                };
                insert_max(&mut marks, MarkKey { chain, pkh, kind }, mark);
            }
        }
    }
    if found == 0 {
        return Err(format!(
            "{}: no block_high_watermarks, preattestation_high_watermarks or attestation_high_watermarks file",
            base_dir.display()
        ));
    }
    Ok(marks)
}

/// Signatory's `watermark_v2/<chain>.json` files (`{ "<pkh>": { "<request kind>": { "level", "round",
/// "hash" } } }`, hash as `vh…`). `path` is one such file or the `watermark_v2` directory. Request kinds
/// map to tzkms's three marks (attestation and attestation_with_dal share one); the highest wins.
/// Kinds that carry no consensus watermark (generic, …) are skipped.
pub fn import_signatory(path: &Path) -> Result<Marks, String> {
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    if files.is_empty() {
        return Err(format!("{}: no <chain>.json file", path.display()));
    }
    #[derive(Deserialize)]
    struct SignatoryMark {
        level: i64,
        #[serde(default)]
        round: i64,
        #[serde(default)]
        hash: Option<String>,
    }
    let mut marks = Marks::new();
    for file in files {
        let at = |what: String| format!("{}: {what}", file.display());
        let chain: ChainId = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .parse()
            .map_err(|e| at(format!("the file name must be <chain id>.json: {e}")))?;
        let text = std::fs::read_to_string(&file).map_err(|e| at(e.to_string()))?;
        let keys: BTreeMap<String, BTreeMap<String, SignatoryMark>> =
            serde_json::from_str(&text).map_err(|e| at(format!("not a Signatory watermark file: {e}")))?;
        for (pkh, kinds) in keys {
            let pkh: PublicKeyHash = pkh.parse().map_err(|e| at(format!("{pkh}: {e}")))?;
            for (request_kind, m) in kinds {
                let kind = match request_kind.as_str() {
                    "block" => ConsensusKind::Block,
                    "preattestation" | "preendorsement" => ConsensusKind::Preattestation,
                    "attestation" | "endorsement" | "attestation_with_dal" | "endorsement_with_dal" => {
                        ConsensusKind::Attestation
                    }
                    _ => continue,
                };
                let level = u32::try_from(m.level).map_err(|_| at(format!("{pkh}: bad level")))?;
                let round = u32::try_from(m.round).map_err(|_| at(format!("{pkh}: bad round")))?;
                let hash = match m.hash.as_deref() {
                    Some(h) => parse_hash(h).map_err(|e| at(format!("{pkh}: {e}")))?,
                    None => [0; 32],
                };
                let mark = Mark {
                    level: Level(level),
                    round: Round(round),
                    hash,
                    // Signatory does not keep signatures.
                    signature: None,
                };
                insert_max(&mut marks, MarkKey { chain, pkh, kind }, mark);
            }
        }
    }
    Ok(marks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tezos::{BlsScheme, Curve, SecretKey};

    fn mark(key: &SecretKey, level: u32) -> Mark {
        Mark {
            level: Level(level),
            round: Round(0),
            hash: [level as u8; 32],
            signature: Some(
                key.sign(&level.to_be_bytes(), BlsScheme::default())
                    .expect("sign"),
            ),
        }
    }

    #[test]
    fn entries_round_trip_on_one_line() {
        let chain: ChainId = "NetXdQprcVkpaWU".parse().expect("chain");
        for curve in Curve::ALL {
            let sk = SecretKey::generate(curve);
            let key = MarkKey {
                chain,
                pkh: sk.public_key().hash(),
                kind: ConsensusKind::Preattestation,
            };
            let mut m = mark(&sk, 7);
            let line = encode_entry(&key, &m);
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(decode_entry(&line).expect("decodes"), (key, m.clone()));
            m.signature = None;
            assert_eq!(decode_entry(&encode_entry(&key, &m)).expect("decodes").1, m);
        }
        assert!(decode_entry("{\"chain\":1}").is_err());
    }

    /// octez-signer refuses every other block at the level of a round-less (pre-Tenderbake) mark, whatever
    /// the round; the imported mark does too, and the levels above sign.
    #[test]
    fn an_octez_mark_without_a_round_refuses_every_round_of_its_level() {
        use crate::watermark::{decide, Decision, MarkRequest, Refusal};
        let dir = tempfile::tempdir().expect("dir");
        let chain = "NetXdQprcVkpaWU";
        let pkh = "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx";
        let signature =
            "sigeeho3jK4MZKsyqcTc9mjhtz9w6enG3AFniufgUXCuXFW7VjShxLoNmxqkQSRYUwP1LHRMere5LrvxcqLgU9KmDGN356Yz";
        let file = serde_json::json!({ chain: { pkh: {
            "level": 1_000, "hash": "11".repeat(32), "signature": signature } } });
        std::fs::write(dir.path().join("block_high_watermarks"), file.to_string()).expect("write");
        let marks = import_octez(dir.path()).expect("imports");
        let key = MarkKey {
            chain: chain.parse().expect("chain"),
            pkh: pkh.parse().expect("pkh"),
            kind: ConsensusKind::Block,
        };
        let mark = &marks[&key];
        assert_eq!((mark.level, mark.round), (Level(1_000), WHOLE_LEVEL));
        assert_eq!(mark.signature, None);

        let request = |level, round, hash| MarkRequest {
            level: Level(level),
            round: Round(round),
            hash: [hash; 32],
        };
        for round in [0, 1, 7, 1_000, i32::MAX as u32 - 1, i32::MAX as u32] {
            for hash in [0x11, 0x22] {
                assert!(
                    matches!(
                        decide(Some(mark), &request(1_000, round, hash)),
                        Decision::Refuse(_)
                    ),
                    "round {round}, hash {hash:x} at the mark's level is refused"
                );
            }
            assert!(matches!(
                decide(Some(mark), &request(999, round, 0x22)),
                Decision::Refuse(Refusal::Below { .. })
            ));
        }
        assert_eq!(decide(Some(mark), &request(1_001, 0, 0x22)), Decision::Sign);

        // A refusal names the mark's round as "any"; the mark survives the tzkms format.
        let refused = crate::watermark::WatermarkError::Refused {
            key,
            requested: (Level(1_000), Round(3)),
            refusal: Refusal::Below {
                stored: (mark.level, mark.round),
            },
        };
        assert!(
            refused.to_string().contains("(level 1000 round any)"),
            "{refused}"
        );
        assert_eq!(decode(&encode(&marks)).expect("decodes"), marks);
    }
}
