//! mfp1 on the shared real-mail corpus: each near-duplicate group of MANIFEST.md gets one
//! fingerprint, and every other file its own.
#![allow(clippy::unwrap_used)] // reason: test code; a failure should stop the test loudly

use ringlog_protocol::fingerprint::{fingerprint, Fingerprint};
use std::collections::BTreeMap;
use std::path::PathBuf;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/real");

/// The corpus folder, or `None` (with a note) when it is absent outside CI.
fn corpus() -> Option<PathBuf> {
    let dir = PathBuf::from(CORPUS);
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(std::env::var_os("CI").is_none(), "shared corpus missing at {CORPUS}");
    eprintln!("note: shared corpus not found at {CORPUS}; skipping");
    None
}

/// The near-duplicate groups listed in MANIFEST.md (file stems; absent members are skipped).
const GROUPS: &[&[&str]] = &[
    &["sa-nice_009", "sa-nice_010", "sa-nice_crlf-endings"],
    &[
        "sa-nice_spf3",
        "sa-nice_spf3-received-spf",
        "sa-nice_spf4-received-spf-nofold",
        "sa-nice_spf5-received-spf-crlf",
        "sa-nice_spf6-received-spf-crlf2",
    ],
    &["sa-nice_spf1", "sa-nice_spf2", "sa-spam_spf1", "sa-spam_spf2", "sa-spam_spf3"],
    &["sa-spam_015", "sa-spam_016"],
    &["sa-nice.mbox.msg1", "sa-nice_001"],
    &["sa-nice.mbox.msg2", "sa-nice_mime2"],
    &["rspamd-received1", "rspamd-received2", "rspamd-received3", "rspamd-received4"],
    &["rspamd-received5", "rspamd-received6"],
    &["rspamd-dmarc_good_dkim_rspamd", "rspamd-dmarc_no_dkim_valid_spf"],
];

fn load(dir: &std::path::Path) -> BTreeMap<String, (Vec<u8>, Fingerprint)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) =
            path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".eml"))
        else {
            continue;
        };
        let raw = std::fs::read(&path).unwrap();
        let fp = fingerprint(&raw);
        out.insert(stem.to_string(), (raw, fp));
    }
    out
}

#[test]
fn corpus_groups_share_one_mfp1_and_all_else_differs() {
    let Some(dir) = corpus() else { return };
    let files = load(&dir);
    assert!(files.len() >= 100, "only {} corpus files", files.len());
    // Group id of every present member.
    let mut group_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (g, members) in GROUPS.iter().enumerate() {
        for m in members.iter().filter(|m| files.contains_key(**m)) {
            group_of.insert(m, g);
        }
    }
    let mut failures = Vec::new();
    for (g, members) in GROUPS.iter().enumerate() {
        let present: Vec<&str> =
            members.iter().copied().filter(|m| files.contains_key(*m)).collect();
        for m in &present[1.min(present.len())..] {
            if files[*m].1.mfp1 != files[present[0]].1.mfp1 {
                failures.push(format!("group {g}: {m} differs from {}", present[0]));
            }
        }
    }
    let names: Vec<&String> = files.keys().collect();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            let same_group = matches!(
                (group_of.get(a.as_str()), group_of.get(b.as_str())),
                (Some(x), Some(y)) if x == y
            );
            if !same_group && files[*a].1.mfp1 == files[*b].1.mfp1 {
                failures.push(format!("{a} and {b} share an mfp1"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn corpus_fingerprints_are_stable_under_lf_conversion_and_mbox_line() {
    // Every corpus message keeps its mfp1 when stored with LF line ends or behind an mbox
    // `From ` line, as mbox and Maildir store it.
    let Some(dir) = corpus() else { return };
    for (name, (raw, fp)) in load(&dir) {
        let lf: Vec<u8> = String::from_utf8_lossy(&raw).into_owned().into_bytes();
        if lf != raw {
            continue; // not UTF-8: the lossy round trip would change octets
        }
        let crlf_free: Vec<u8> = {
            let mut v = Vec::with_capacity(raw.len());
            let mut i = 0;
            while i < raw.len() {
                if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                    continue;
                }
                v.push(raw[i]);
                i += 1;
            }
            v
        };
        if !raw.starts_with(b"From ") {
            let mut boxed = b"From MAILER-DAEMON Thu Jan  1 00:00:00 2004\n".to_vec();
            boxed.extend_from_slice(&crlf_free);
            assert_eq!(fingerprint(&boxed).mfp1, fp.mfp1, "{name}: mbox copy");
        }
        assert_eq!(fingerprint(&crlf_free).mfp1, fp.mfp1, "{name}: LF copy");
    }
}
