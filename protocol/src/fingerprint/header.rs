//! Step 2 of mfp1: splitting a header block from its body and unfolding the fields that count.

use super::fields::{self, ContentType};
use super::lines::find_crlf;
use super::{Defect, Defects};

/// Header block size above which the message is flagged (it is still fingerprinted).
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// Received count above which the message is flagged.
pub const MAX_RECEIVED: usize = 1000;

/// The fields mfp1 reads, in the fixed order of the header set (plus the transfer encoding,
/// which only the body walk reads).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Name {
    From,
    Sender,
    ReplyTo,
    To,
    Cc,
    Subject,
    Date,
    MessageId,
    InReplyTo,
    References,
    MimeVersion,
    ContentType,
    ContentTransferEncoding,
}

impl Name {
    /// The header-set order (transfer encoding is not part of the set).
    pub(crate) const SET: [Name; 12] = [
        Name::From,
        Name::Sender,
        Name::ReplyTo,
        Name::To,
        Name::Cc,
        Name::Subject,
        Name::Date,
        Name::MessageId,
        Name::InReplyTo,
        Name::References,
        Name::MimeVersion,
        Name::ContentType,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Name::From => "from",
            Name::Sender => "sender",
            Name::ReplyTo => "reply-to",
            Name::To => "to",
            Name::Cc => "cc",
            Name::Subject => "subject",
            Name::Date => "date",
            Name::MessageId => "message-id",
            Name::InReplyTo => "in-reply-to",
            Name::References => "references",
            Name::MimeVersion => "mime-version",
            Name::ContentType => "content-type",
            Name::ContentTransferEncoding => "content-transfer-encoding",
        }
    }

    fn parse(name: &[u8]) -> Option<Name> {
        // The longest name is 25 octets; anything longer is not ours.
        if name.len() > 25 {
            return None;
        }
        let mut buf = [0u8; 25];
        let lower = &mut buf[..name.len()];
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        Some(match &*lower {
            b"from" => Name::From,
            b"sender" => Name::Sender,
            b"reply-to" => Name::ReplyTo,
            b"to" => Name::To,
            b"cc" => Name::Cc,
            b"subject" => Name::Subject,
            b"date" => Name::Date,
            b"message-id" => Name::MessageId,
            b"in-reply-to" => Name::InReplyTo,
            b"references" => Name::References,
            b"mime-version" => Name::MimeVersion,
            b"content-type" => Name::ContentType,
            b"content-transfer-encoding" => Name::ContentTransferEncoding,
            _ => return None,
        })
    }
}

/// A parsed header block: the fields that count (unfolded, as text) and where the body starts.
pub(crate) struct Header {
    pub fields: Vec<(Name, String)>,
    pub body_start: usize,
    /// The first Content-Type field, parsed.
    pub content_type: Option<ContentType>,
}

impl Header {
    /// The value of the first field called `name`.
    pub(crate) fn first(&self, name: Name) -> Option<&str> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Header octets as text: valid UTF-8 sequences as UTF-8, every other octet as ISO-8859-1.
/// Returns the text and whether any octet was not valid UTF-8.
pub(crate) fn decode_header_text(bytes: &[u8]) -> (String, bool) {
    let mut out = String::with_capacity(bytes.len());
    let mut invalid = false;
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            invalid = true;
            out.push(char::from(b));
        }
    }
    (out, invalid)
}

/// Whether `line` opens with `--boundary` followed by nothing but optional `--` and WSP.
pub(crate) fn is_delimiter_line(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (close, rest) = match rest.strip_prefix(b"--") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.iter().all(|&b| is_wsp(b)) {
        Some(close)
    } else {
        None
    }
}

/// Whether `s` starts like a header field: one or more field-name octets and a colon.
fn looks_like_field(s: &[u8]) -> bool {
    let n = s.iter().take_while(|&&b| (33..=126).contains(&b) && b != b':').count();
    n > 0 && s.get(n) == Some(&b':')
}

/// Parses the header block at the start of `data` (lines end in CRLF; any other CR or LF inside
/// a header line is read as a space). `top` marks the message's own header, which is checked
/// for the message-level defects.
pub(crate) fn parse(data: &[u8], top: bool, defects: &mut Defects) -> Header {
    let mut fields: Vec<(Name, String)> = Vec::new();
    let mut content_type: Option<ContentType> = None;
    let mut boundary: Option<Vec<u8>> = None;
    // The field being unfolded: its name (if it is one we keep) and its raw value octets.
    let mut current: Option<(Option<Name>, Vec<u8>)> = None;
    let mut n_received = 0usize;
    let mut n_from = 0usize;
    let mut pos = 0usize;
    let body_start;

    let finish = |current: &mut Option<(Option<Name>, Vec<u8>)>,
                  fields: &mut Vec<(Name, String)>,
                  content_type: &mut Option<ContentType>,
                  boundary: &mut Option<Vec<u8>>,
                  defects: &mut Defects| {
        if let Some((Some(name), raw)) = current.take() {
            let (text, invalid) = decode_header_text(&raw);
            if invalid && top {
                defects.add(Defect::InvalidUtf8Header);
            }
            if name == Name::ContentType && content_type.is_none() {
                let ct = fields::content_type(&text);
                *boundary = ct.boundary.clone().map(String::into_bytes);
                *content_type = Some(ct);
            }
            fields.push((name, text));
        }
    };

    loop {
        if pos >= data.len() {
            body_start = data.len();
            break;
        }
        let (line, next) = match find_crlf(data, pos) {
            Some(e) => (&data[pos..e], e + 2),
            None => (&data[pos..], data.len()),
        };
        if line.is_empty() {
            body_start = next;
            break;
        }
        let has_bare = line.iter().any(|&b| b == b'\r' || b == b'\n');
        let first = if line[0] == b'\r' || line[0] == b'\n' { b' ' } else { line[0] };
        if top && std::str::from_utf8(line).is_err() {
            defects.add(Defect::InvalidUtf8Header);
        }
        if has_bare {
            for (i, &b) in line.iter().enumerate() {
                if (b == b'\r' || b == b'\n') && looks_like_field(line.get(i + 1..).unwrap_or(&[]))
                {
                    defects.add(Defect::GluedField);
                }
            }
        }
        if is_wsp(first) {
            if let Some((name, raw)) = current.as_mut() {
                if name.is_some() {
                    raw.extend(line.iter().map(
                        |&b| {
                            if b == b'\r' || b == b'\n' {
                                b' '
                            } else {
                                b
                            }
                        },
                    ));
                }
                pos = next;
                continue;
            }
            // Folded text before any field: the header block is malformed; the body starts here.
            defects.add(Defect::MissingHeaderSeparator);
            body_start = pos;
            break;
        }
        finish(&mut current, &mut fields, &mut content_type, &mut boundary, defects);
        if let Some(b) = &boundary {
            if is_delimiter_line(line, b).is_some() {
                defects.add(Defect::MissingHeaderSeparator);
                body_start = pos;
                break;
            }
        }
        let colon = line.iter().position(|&b| b == b':');
        let name_ok = colon.and_then(|c| {
            let mut name = &line[..c];
            while let [rest @ .., last] = name {
                if is_wsp(*last) {
                    name = rest;
                } else {
                    break;
                }
            }
            (!name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))).then_some(name)
        });
        let (Some(c), Some(name)) = (colon, name_ok) else {
            defects.add(Defect::MissingHeaderSeparator);
            body_start = pos;
            break;
        };
        if top {
            if name.eq_ignore_ascii_case(b"received") {
                n_received += 1;
            } else if name.eq_ignore_ascii_case(b"from") {
                n_from += 1;
            }
        }
        let kept = Name::parse(name);
        let raw = if kept.is_some() {
            line[c + 1..].iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }).collect()
        } else {
            Vec::new()
        };
        current = Some((kept, raw));
        pos = next;
    }
    finish(&mut current, &mut fields, &mut content_type, &mut boundary, defects);
    if top {
        if n_from > 1 {
            defects.add(Defect::DuplicateFrom);
        }
        if n_received > MAX_RECEIVED {
            defects.add(Defect::TooManyReceived);
        }
        if body_start > MAX_HEADER_BYTES {
            defects.add(Defect::HeaderTooLarge);
        }
    }
    Header { fields, body_start, content_type }
}
