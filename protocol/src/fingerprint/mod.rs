//! The message fingerprint `mfp1` (see docs/FORMAT.md): a hash of a mail message that every
//! relay computes alike, whatever trace fields, line ends, folding or transfer encoding the
//! message picked up on its way, and that still tells different messages apart.
//!
//! [`fingerprint`] never fails and never panics; what it had to repair is listed in
//! [`Fingerprint::defects`]. Memory is linear in the input, MIME nesting and part count are
//! capped, and nothing recurses on input structure.

mod body;
mod fields;
mod header;
mod lines;

use crate::bytes::{sha256, Hash};
use header::Name;
use serde::{Deserialize, Serialize};
use std::fmt;

pub use body::{MAX_DEPTH, MAX_LEAVES, MAX_PARTS};
pub use header::{MAX_HEADER_BYTES, MAX_RECEIVED};

/// The fingerprints of one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The header set and the body tree: joins the records of every hop.
    pub mfp1: Hash,
    /// As `mfp1` without Message-ID and Date: joins a hop where an MTA added either.
    pub mfp1_lite: Hash,
    /// The root of the body tree: finds every copy of one payload.
    pub body: Hash,
    /// Leaf hashes of the body tree in tree order, at most [`MAX_LEAVES`].
    pub leaves: Vec<Hash>,
    /// What was malformed and repaired, each kind once, in the order first met.
    pub defects: Vec<Defect>,
}

/// Something malformed about a message. The fingerprint is still computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Defect {
    /// More than one From field in the message header.
    DuplicateFrom,
    /// Line ends are mixed: a bare CR or LF in a CRLF message, or a CR in an LF message.
    BareLineEnd,
    /// The message header block is over [`MAX_HEADER_BYTES`].
    HeaderTooLarge,
    /// More than [`MAX_RECEIVED`] Received fields.
    TooManyReceived,
    /// Header octets that are not UTF-8 (read as ISO-8859-1).
    InvalidUtf8Header,
    /// A bare CR or LF inside a header line is followed by something that looks like another
    /// field (two fields glued into one).
    GluedField,
    /// A header block ended without an empty line (at a line that is not a field, or at a
    /// MIME delimiter line).
    MissingHeaderSeparator,
    /// A multipart without a boundary parameter or without any delimiter line.
    MissingBoundary,
    /// A multipart without its close delimiter.
    MissingCloseDelimiter,
    /// MIME nesting deeper than [`MAX_DEPTH`].
    MimeTooDeep,
    /// More than [`MAX_PARTS`] MIME parts.
    TooManyParts,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Defect::DuplicateFrom => "duplicate from field",
            Defect::BareLineEnd => "bare cr or lf",
            Defect::HeaderTooLarge => "header block too large",
            Defect::TooManyReceived => "too many received fields",
            Defect::InvalidUtf8Header => "invalid utf-8 in header",
            Defect::GluedField => "glued header field",
            Defect::MissingHeaderSeparator => "header block not ended by an empty line",
            Defect::MissingBoundary => "multipart without boundary or delimiter",
            Defect::MissingCloseDelimiter => "multipart without close delimiter",
            Defect::MimeTooDeep => "mime nesting too deep",
            Defect::TooManyParts => "too many mime parts",
        })
    }
}

/// The defects found so far, each kind once.
#[derive(Default)]
pub(crate) struct Defects(Vec<Defect>);

impl Defects {
    pub(crate) fn add(&mut self, d: Defect) {
        if !self.0.contains(&d) {
            self.0.push(d);
        }
    }
}

/// The canonical header set of a message (step 3) and the lite variant without Message-ID
/// and Date, as the octets that enter the hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderSet {
    /// `name:value\n` lines in the fixed name order.
    pub full: String,
    /// The same without `message-id` and `date`.
    pub lite: String,
}

/// Everything `fingerprint` derives, for tests and for explaining a fingerprint.
struct Parsed {
    set: HeaderSet,
    tree: body::Tree,
    defects: Defects,
}

fn parse(raw: &[u8]) -> Parsed {
    let mut defects = Defects::default();
    let data = lines::strip_mbox_line(raw);
    let crlf = lines::first_line_is_crlf(data);
    let stats = lines::line_end_stats(data);
    if (crlf && stats.bare_cr + stats.bare_lf > 0) || (!crlf && stats.any_cr) {
        defects.add(Defect::BareLineEnd);
    }
    // In CRLF mode the header block is read as is (bare CR/LF inside are spaces); otherwise
    // the whole message is repaired to CRLF first. The body is always repaired.
    let normalized = if crlf { std::borrow::Cow::Borrowed(data) } else { lines::to_crlf(data) };
    let h = header::parse(&normalized, true, &mut defects);
    let body_src = normalized.get(h.body_start..).unwrap_or_default();
    let body = lines::to_crlf(body_src);

    let mut full = String::new();
    let mut lite = String::new();
    for name in Name::SET {
        for (n, value) in h.fields.iter().filter(|(n, _)| *n == name) {
            let canon = match n {
                Name::From | Name::Sender | Name::ReplyTo | Name::To | Name::Cc => {
                    fields::addresses(value)
                }
                Name::Subject => fields::subject(value),
                Name::Date => fields::date(value),
                Name::MessageId | Name::InReplyTo | Name::References => fields::msg_ids(value),
                Name::MimeVersion => fields::collapse(value),
                Name::ContentType => fields::content_type(value).canonical,
                Name::ContentTransferEncoding => continue,
            };
            let line = format!("{}:{}\n", name.as_str(), canon);
            if !matches!(name, Name::MessageId | Name::Date) {
                lite.push_str(&line);
            }
            full.push_str(&line);
        }
    }
    let ct = h.content_type.clone().unwrap_or_else(fields::ContentType::text_plain);
    let tree = body::tree(&body, 0, ct, h.first(Name::ContentTransferEncoding), &mut defects);
    Parsed { set: HeaderSet { full, lite }, tree, defects }
}

/// The fingerprints of a raw message (an .eml file, an mbox entry, or what a milter saw).
pub fn fingerprint(raw: &[u8]) -> Fingerprint {
    let p = parse(raw);
    let body = p.tree.root;
    Fingerprint {
        mfp1: sha256(&[b"mfp1\n", p.set.full.as_bytes(), b"\n", &body.0]),
        mfp1_lite: sha256(&[b"mfp1-lite\n", p.set.lite.as_bytes(), b"\n", &body.0]),
        body,
        leaves: p.tree.leaves,
        defects: p.defects.0,
    }
}

/// The canonical header set of a raw message, as it enters `mfp1` and `mfp1_lite`.
pub fn header_set(raw: &[u8]) -> HeaderSet {
    parse(raw).set
}
