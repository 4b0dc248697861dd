//! Step 4 of mfp1: the body tree hash. The MIME walk keeps an explicit stack (no recursion)
//! and caps depth and part count, so a hostile message cannot drive it deep or wide.

use super::fields::ContentType;
use super::header::{self, is_delimiter_line, Name};
use super::lines::{find_crlf, find_line_octet};
use super::{Defect, Defects};
use crate::bytes::Hash;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Multipart nesting deeper than this is hashed as one opaque leaf.
pub const MAX_DEPTH: usize = 32;
/// Parts beyond this many (over the whole message) are not split further.
pub const MAX_PARTS: usize = 4096;
/// Leaf hashes kept in the result (all leaves count towards the body hash).
pub const MAX_LEAVES: usize = 64;
/// A line at least this long, followed by a line starting with SP, was broken by an MTA.
const BROKEN_LINE_MIN: usize = 990;

/// Content-Transfer-Encoding, as far as decoding is concerned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cte {
    /// 7bit, 8bit or absent: content as is, MTA line breaks joined in text.
    Plain,
    /// binary or an unknown value: content as is.
    Opaque,
    Base64,
    QuotedPrintable,
}

fn cte(value: Option<&str>) -> Cte {
    let Some(v) = value else {
        return Cte::Plain;
    };
    let v = super::fields::strip_comments(v);
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "7bit" | "8bit" => Cte::Plain,
        "base64" => Cte::Base64,
        "quoted-printable" => Cte::QuotedPrintable,
        _ => Cte::Opaque,
    }
}

/// One multipart being walked.
struct Frame {
    hasher: Sha256,
    boundary: Vec<u8>,
    /// Next unread octet of the multipart body.
    cursor: usize,
    end: usize,
    done: bool,
}

/// The body hash and the leaf hashes in tree order (at most [`MAX_LEAVES`]).
pub(crate) struct Tree {
    pub root: Hash,
    pub leaves: Vec<Hash>,
}

/// Hashes the body `data[start..]` of an entity with the given Content-Type and encoding.
pub(crate) fn tree(
    data: &[u8],
    start: usize,
    ct: ContentType,
    encoding: Option<&str>,
    defects: &mut Defects,
) -> Tree {
    let mut leaves = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut n_parts = 0usize;
    let end = data.len();
    let mut pending = enter(data, start, end, &ct, cte(encoding), &mut stack, &mut leaves, defects);
    loop {
        if let Some(h) = pending.take() {
            match stack.last_mut() {
                Some(top) => top.hasher.update(h.0),
                None => return Tree { root: h, leaves },
            }
        }
        let Some(top) = stack.last_mut() else {
            // Unreachable: the root either returned a hash or pushed a frame.
            return Tree { root: Hash([0; 32]), leaves };
        };
        if top.done {
            if let Some(f) = stack.pop() {
                pending = Some(Hash(f.hasher.finalize().into()));
            }
            continue;
        }
        if n_parts >= MAX_PARTS {
            defects.add(Defect::TooManyParts);
            top.done = true;
            let rest = data.get(top.cursor..top.end).unwrap_or_default();
            pending =
                Some(leaf_hash("application/octet-stream", Cte::Opaque, false, rest, &mut leaves));
            continue;
        }
        n_parts += 1;
        let (p_start, p_end) = next_part(data, top, defects);
        let depth = stack.len();
        let part = data.get(p_start..p_end).unwrap_or_default();
        let h = header::parse(part, false, defects);
        let ct = h.content_type.clone().unwrap_or_else(ContentType::text_plain);
        let enc = cte(h.first(Name::ContentTransferEncoding));
        if depth >= MAX_DEPTH && ct.is_multipart() {
            defects.add(Defect::MimeTooDeep);
            let body = part.get(h.body_start..).unwrap_or_default();
            pending = Some(leaf_hash(&ct.canonical, Cte::Opaque, false, body, &mut leaves));
            continue;
        }
        pending = enter(
            data,
            p_start + h.body_start.min(part.len()),
            p_end,
            &ct,
            enc,
            &mut stack,
            &mut leaves,
            defects,
        );
    }
}

/// Starts an entity whose body is `data[start..end]`: returns its hash if it is a leaf, or
/// pushes a frame for a multipart with at least one delimiter line.
#[allow(clippy::too_many_arguments)] // reason: one internal call shape, clearer unbundled
fn enter(
    data: &[u8],
    start: usize,
    end: usize,
    ct: &ContentType,
    enc: Cte,
    stack: &mut Vec<Frame>,
    leaves: &mut Vec<Hash>,
    defects: &mut Defects,
) -> Option<Hash> {
    let body = data.get(start..end).unwrap_or_default();
    if ct.is_multipart() {
        let boundary = ct.boundary.as_deref().unwrap_or_default().as_bytes();
        let first =
            if boundary.is_empty() { None } else { find_delimiter(data, start, end, boundary) };
        let Some(d) = first else {
            // No boundary or no delimiter line: the multipart is hashed as one opaque leaf.
            defects.add(Defect::MissingBoundary);
            return Some(leaf_hash(&ct.canonical, Cte::Opaque, false, body, leaves));
        };
        let mut hasher = Sha256::new();
        hasher.update(b"M:");
        hasher.update(ct.canonical.as_bytes());
        hasher.update(b"\n");
        stack.push(Frame {
            hasher,
            boundary: boundary.to_vec(),
            cursor: d.after,
            end,
            done: d.close,
        });
        return None;
    }
    Some(leaf_hash(&ct.canonical, enc, ct.is_textlike(), body, leaves))
}

/// A delimiter line found in a multipart body.
struct Delimiter {
    /// Where the line starts.
    line: usize,
    /// Just past its CRLF (or the end).
    after: usize,
    close: bool,
}

/// The first delimiter line for `boundary` that starts at a line start in `data[from..end]`
/// (`from` itself counts as a line start).
fn find_delimiter(data: &[u8], from: usize, end: usize, boundary: &[u8]) -> Option<Delimiter> {
    let region = data.get(..end)?;
    let mut pos = from;
    while pos < end {
        let line_end = find_crlf(region, pos);
        let line = &region[pos..line_end.unwrap_or(end)];
        if line.starts_with(b"--") {
            if let Some(close) = is_delimiter_line(line, boundary) {
                return Some(Delimiter {
                    line: pos,
                    after: line_end.map_or(end, |e| e + 2),
                    close,
                });
            }
        }
        pos = line_end? + 2;
    }
    None
}

/// The next part of the multipart `f`: its octet range (without the CRLF that belongs to the
/// following delimiter). Marks the frame done after the close delimiter or at the end.
fn next_part(data: &[u8], f: &mut Frame, defects: &mut Defects) -> (usize, usize) {
    let start = f.cursor;
    match find_delimiter(data, start, f.end, &f.boundary) {
        Some(d) => {
            let part_end = if d.line >= start + 2 { d.line - 2 } else { start };
            f.cursor = d.after;
            f.done = d.close;
            (start, part_end)
        }
        None => {
            defects.add(Defect::MissingCloseDelimiter);
            f.done = true;
            f.cursor = f.end;
            (start, f.end)
        }
    }
}

/// `SHA-256("L:" + content-type + "\n" + content)` after decoding (and the text rules).
fn leaf_hash(ct: &str, enc: Cte, textlike: bool, body: &[u8], leaves: &mut Vec<Hash>) -> Hash {
    let decoded: Cow<'_, [u8]> = match enc {
        Cte::Base64 => Cow::Owned(base64_lenient(body)),
        Cte::QuotedPrintable => Cow::Owned(quoted_printable(body)),
        Cte::Plain | Cte::Opaque => Cow::Borrowed(body),
    };
    let content =
        if textlike { Cow::Owned(canonical_text(&decoded, enc == Cte::Plain)) } else { decoded };
    let h = Hash(
        Sha256::new()
            .chain_update(b"L:")
            .chain_update(ct.as_bytes())
            .chain_update(b"\n")
            .chain_update(&content)
            .finalize()
            .into(),
    );
    if leaves.len() < MAX_LEAVES {
        leaves.push(h);
    }
    h
}

/// Lines split at CRLF, bare CR or bare LF; no empty last line for a final line end.
fn split_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= data.len() {
            return None;
        }
        let start = pos;
        match find_line_octet(data, pos) {
            Some(i) => {
                pos =
                    if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') { i + 2 } else { i + 1 };
                Some(&data[start..i])
            }
            None => {
                pos = data.len();
                Some(&data[start..])
            }
        }
    })
}

/// Appends lines to a canonical text: trailing SP/HTAB stripped, trailing empty lines held
/// back until a non-empty line follows.
struct TextOut {
    out: Vec<u8>,
    empties: usize,
}

impl TextOut {
    fn emit(&mut self, line: &[u8]) {
        let mut l = line;
        while let [rest @ .., b' ' | b'\t'] = l {
            l = rest;
        }
        if l.is_empty() {
            self.empties += 1;
            return;
        }
        for _ in 0..self.empties {
            self.out.extend_from_slice(b"\r\n");
        }
        self.empties = 0;
        self.out.extend_from_slice(l);
        self.out.extend_from_slice(b"\r\n");
    }
}

/// The text rules: MTA-broken long lines joined (when `join`), trailing SP/HTAB stripped,
/// trailing empty lines dropped, every line ended by CRLF.
pub(crate) fn canonical_text(data: &[u8], join: bool) -> Vec<u8> {
    let mut t = TextOut { out: Vec::with_capacity(data.len() + 2), empties: 0 };
    let mut lines = split_lines(data).peekable();
    // A joined line under construction (only when an MTA break was found).
    let mut joined: Vec<u8> = Vec::new();
    while let Some(seg) = lines.next() {
        let mut last = seg;
        let mut is_joined = false;
        while join && last.len() >= BROKEN_LINE_MIN {
            let Some(next) = lines.next_if(|n| n.first() == Some(&b' ')) else {
                break;
            };
            if !is_joined {
                joined.clear();
                joined.extend_from_slice(seg);
                is_joined = true;
            }
            joined.extend_from_slice(&next[1..]);
            last = next;
        }
        if is_joined {
            t.emit(&joined);
        } else {
            t.emit(seg);
        }
    }
    t.out
}

/// Base64 that ignores every octet outside the alphabet (padding included); a final group
/// of 2 or 3 symbols gives 1 or 2 octets, a lone final symbol is dropped.
pub(crate) fn base64_lenient(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 3);
    let mut acc = 0u32;
    let mut n = 0u32;
    for &b in data {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            n = 0;
        }
    }
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Quoted-printable (RFC 2045 6.7): trailing SP/HTAB of each encoded line dropped, `=` at
/// line end a soft break, `=XX` an octet; any other `=` is kept literally.
pub(crate) fn quoted_printable(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0usize;
    while pos < data.len() {
        let (mut line, hard_break, next) = match find_crlf(data, pos) {
            Some(e) => (&data[pos..e], true, e + 2),
            None => (&data[pos..], false, data.len()),
        };
        pos = next;
        while let [rest @ .., b' ' | b'\t'] = line {
            line = rest;
        }
        let soft = line.last() == Some(&b'=');
        if soft {
            line = &line[..line.len() - 1];
        }
        let mut i = 0;
        while i < line.len() {
            let b = line[i];
            if b == b'=' {
                if let (Some(h), Some(l)) = (
                    line.get(i + 1).copied().and_then(hex_val),
                    line.get(i + 2).copied().and_then(hex_val),
                ) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
            out.push(b);
            i += 1;
        }
        if hard_break && !soft {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn decoders() {
        assert_eq!(base64_lenient(b"aGVs\r\nbG8=\r\n"), b"hello");
        assert_eq!(base64_lenient(b"aGk"), b"hi");
        assert_eq!(quoted_printable(b"a=3Db =\r\nc  \r\nd=\r\n"), b"a=b c\r\nd");
        assert_eq!(quoted_printable(b"x=zz"), b"x=zz");
    }

    #[test]
    fn text_rules() {
        assert_eq!(canonical_text(b"a \t\nb\r\n\r\n \r\n", true), b"a\r\nb\r\n");
        assert_eq!(canonical_text(b"\n\na", true), b"\r\n\r\na\r\n");
        assert_eq!(canonical_text(b"", true), b"");
        let long = vec![b'x'; 995];
        let mut broken = long.clone();
        broken.extend_from_slice(b"\r\n yz\r\n");
        let mut want = long.clone();
        want.extend_from_slice(b"yz\r\n");
        assert_eq!(canonical_text(&broken, true), want);
        assert_ne!(canonical_text(&broken, false), want);
        assert_eq!(canonical_text(b"short\r\n next", true), b"short\r\n next\r\n");
    }
}
