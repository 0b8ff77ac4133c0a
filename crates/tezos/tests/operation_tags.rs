//! The generic operation decoder against the operation tags of the active protocol, as listed from the
//! Octez source in `tests/data/operation_tags_<protocol>.txt` (the newest file is the active protocol).
//! A protocol upgrade adds that file first: this test then names every tag the decoder does not know,
//! and each must be decoded or listed below as refused on purpose. See docs/protocol-upgrades.md.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use tezos::operation::{decode, OperationError};

/// Tags of the protocol's 0x03 contents that the decoder does not decode: a payload holding one is
/// refused (403), which is safe. Each line says why. A tag the protocol adds is not here, so the test
/// fails until someone decides: decode it, or refuse it here.
const KNOWN_NOT_DECODED: &[(u8, &str)] = &[
    // Evidence and VDF revelations are built by bakers' accusers and never signed by a baker's key
    // through a remote signer in Octez's flows; not decoded, refused.
    (3, "double_baking_evidence"),
    (8, "vdf_revelation"),
    (24, "dal_entrapment_evidence"),
    // ZK rollups: disabled on mainnet; refused.
    (250, "zk_rollup_origination"),
    (251, "zk_rollup_publish"),
    (252, "zk_rollup_update"),
];

/// What the decoder makes of an operation with `tag` and nothing after it.
#[derive(Debug, PartialEq, Eq)]
enum Decoder {
    /// It reads the operation's fields: the kind it decodes the tag as.
    Decodes(String),
    /// It knows the tag and refuses it by name.
    Refuses(String),
    /// It does not know the tag.
    Unknown,
}

fn decoder(tag: u8) -> Decoder {
    let mut bytes = vec![0x03];
    bytes.extend_from_slice(&[0x22; 32]);
    bytes.push(tag);
    match decode(&bytes) {
        Err(OperationError::UnknownTag { index: 0, .. }) => Decoder::Unknown,
        Err(OperationError::NotDecoded { index: 0, name, .. }) => Decoder::Refuses(name.to_owned()),
        Err(OperationError::Truncated { index: 0, kind })
        | Err(OperationError::Invalid { index: 0, kind, .. }) => Decoder::Decodes(kind.name().to_owned()),
        other => panic!("tag {tag} with no fields: unexpected {other:?}"),
    }
}

struct TagList {
    file: String,
    commit: String,
    /// tag → (encoding, name)
    tags: BTreeMap<u8, (String, String)>,
}

fn newest_tag_list() -> TagList {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("operation_tags_") && name.ends_with(".txt")
        })
        .collect();
    files.sort();
    let path = files.pop().expect("no tests/data/operation_tags_*.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut commit = String::new();
    let mut tags = BTreeMap::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# commit: ") {
            commit = c.trim().to_owned();
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [tag, encoding, name] = fields.as_slice() else {
            panic!("{}: malformed line {line:?}", path.display());
        };
        assert!(
            ["contents", "bls_mode", "reserved"].contains(encoding),
            "{}: unknown encoding in {line:?}",
            path.display()
        );
        let previous = tags.insert(tag.parse().unwrap(), (encoding.to_string(), name.to_string()));
        assert!(previous.is_none(), "{}: tag {tag} twice", path.display());
    }
    TagList {
        file: path.file_name().unwrap().to_str().unwrap().to_owned(),
        commit,
        tags,
    }
}

#[test]
fn tag_list_names_the_octez_commit_it_was_taken_from() {
    let list = newest_tag_list();
    assert_eq!(
        list.commit.len(),
        40,
        "{}: no '# commit: <40 hex>' line",
        list.file
    );
    assert!(
        list.commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        list.file
    );
    // 025 defines the manager tags 107-115 and the tags Octez's bakers sign as consensus.
    for tag in [20, 21, 23, 40, 41, 107, 108, 114, 115] {
        assert!(list.tags.contains_key(&tag), "{}: tag {tag} missing", list.file);
    }
}

#[test]
fn decoder_knows_every_operation_tag_of_the_active_protocol() {
    let list = newest_tag_list();
    let mut lacking = Vec::new();
    let mut stale = Vec::new();
    for (&tag, (encoding, name)) in &list.tags {
        let found = decoder(tag);
        let not_decoded = KNOWN_NOT_DECODED.iter().find(|(t, _)| *t == tag);
        match (encoding.as_str(), &found) {
            ("contents", Decoder::Decodes(kind)) => {
                assert_eq!(kind, name, "{}: tag {tag} decoded as {kind}", list.file);
                if not_decoded.is_some() {
                    stale.push(format!("{tag} {name}"));
                }
            }
            ("contents", Decoder::Refuses(refused)) => {
                assert_eq!(refused, name, "{}: tag {tag} refused as {refused}", list.file);
                if not_decoded.is_none() {
                    lacking.push(format!("{tag} {name} (refused by the decoder, not listed here)"));
                }
            }
            ("contents", Decoder::Unknown) => {
                if not_decoded.is_none() {
                    lacking.push(format!("{tag} {name}"));
                }
            }
            // Slotless consensus and reserved tags are never a 0x03 operation: the decoder must not
            // accept them (consensus is classified from 0x12/0x13 bytes by payload.rs, not here).
            (_, found) => assert_eq!(
                found,
                &Decoder::Unknown,
                "{}: tag {tag} ({encoding} {name})",
                list.file
            ),
        }
    }
    assert!(
        stale.is_empty(),
        "KNOWN_NOT_DECODED lists tags the decoder now decodes: {stale:?}; remove them from the list"
    );
    assert!(
        lacking.is_empty(),
        "{} (Octez commit {}) defines tags the decoder does not decode: {lacking:?}. Decode them in \
         crates/tezos/src/operation.rs, or add them to KNOWN_NOT_DECODED with the reason they are refused",
        list.file,
        list.commit
    );
}

#[test]
fn decoder_knows_no_tag_the_active_protocol_does_not_define() {
    let list = newest_tag_list();
    let extra: Vec<String> = (0..=255u8)
        .filter(|t| !list.tags.contains_key(t))
        .filter_map(|t| match decoder(t) {
            Decoder::Unknown => None,
            found => Some(format!("{t}: {found:?}")),
        })
        .collect();
    assert!(
        extra.is_empty(),
        "the decoder accepts tags {} does not define: {extra:?}",
        list.file
    );
}
