//! Step 1 of mfp1: the leading mbox line, the line-end mode, and bare CR/LF repair.

use std::borrow::Cow;

/// Drops a leading mbox `From ` line (through its LF), if there is one.
pub(crate) fn strip_mbox_line(raw: &[u8]) -> &[u8] {
    if !raw.starts_with(b"From ") {
        return raw;
    }
    match raw.iter().position(|&b| b == b'\n') {
        Some(i) => raw.get(i + 1..).unwrap_or_default(),
        None => &[],
    }
}

/// Whether the first line ends in CRLF (the header block then uses CRLF strictly).
pub(crate) fn first_line_is_crlf(data: &[u8]) -> bool {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => i > 0 && data.get(i - 1) == Some(&b'\r'),
        None => false,
    }
}

/// Counts of line-end octets that are not part of a CRLF pair, and whether any CR occurs.
#[derive(Default)]
pub(crate) struct LineEndStats {
    pub bare_cr: usize,
    pub bare_lf: usize,
    pub any_cr: bool,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether the word has a zero octet (the classic SWAR test; exact for the first match only,
/// which is all we use: the caller rescans the word octet by octet).
#[inline]
fn has_zero(x: u64) -> bool {
    x.wrapping_sub(LO) & !x & HI != 0
}

/// The index of the next octet at or after `from` for which `hit` holds, where `hit` is
/// `b == a || b == b`; scans eight octets at a time.
#[inline]
fn find2(data: &[u8], from: usize, a: u8, b: u8) -> Option<usize> {
    let (wa, wb) = (LO * u64::from(a), LO * u64::from(b));
    let mut i = from;
    while i + 8 <= data.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&data[i..i + 8]);
        let x = u64::from_le_bytes(w);
        if has_zero(x ^ wa) || has_zero(x ^ wb) {
            break;
        }
        i += 8;
    }
    data.get(i..)?.iter().position(|&c| c == a || c == b).map(|p| i + p)
}

/// The next CR or LF at or after `from`.
#[inline]
pub(crate) fn find_line_octet(data: &[u8], from: usize) -> Option<usize> {
    find2(data, from, b'\r', b'\n')
}

pub(crate) fn line_end_stats(data: &[u8]) -> LineEndStats {
    let mut s = LineEndStats::default();
    let mut i = 0;
    while let Some(p) = find_line_octet(data, i) {
        if data[p] == b'\r' {
            s.any_cr = true;
            if data.get(p + 1) == Some(&b'\n') {
                i = p + 2;
                continue;
            }
            s.bare_cr += 1;
        } else {
            s.bare_lf += 1;
        }
        i = p + 1;
    }
    s
}

/// Turns every bare CR and bare LF into CRLF. Borrows when there is nothing to change.
pub(crate) fn to_crlf(data: &[u8]) -> Cow<'_, [u8]> {
    let stats = line_end_stats(data);
    if stats.bare_cr + stats.bare_lf == 0 {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + stats.bare_cr + stats.bare_lf);
    let mut i = 0;
    while let Some(p) = find_line_octet(data, i) {
        out.extend_from_slice(&data[i..p]);
        out.extend_from_slice(b"\r\n");
        i = if data[p] == b'\r' && data.get(p + 1) == Some(&b'\n') { p + 2 } else { p + 1 };
    }
    out.extend_from_slice(data.get(i..).unwrap_or_default());
    Cow::Owned(out)
}

/// Finds the next CRLF at or after `from`; returns its index.
pub(crate) fn find_crlf(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(at) = find2(data, i, b'\n', b'\n') {
        if at > from && data[at - 1] == b'\r' {
            return Some(at - 1);
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn crlf_repair() {
        assert_eq!(&*to_crlf(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd");
        assert_eq!(&*to_crlf(b"a\r\r\n"), b"a\r\n\r\n");
        assert!(matches!(to_crlf(b"a\r\nb"), Cow::Borrowed(_)));
        assert_eq!(find_crlf(b"a\nb\r\nc", 0), Some(3));
        assert_eq!(find_crlf(b"a\r\n", 2), None);
        assert_eq!(find_crlf(b"0123456789abcdef\r\n", 0), Some(16));
        assert_eq!(find_line_octet(b"0123456789abcdef\rx", 3), Some(16));
        assert_eq!(find_line_octet(b"0123456789abcdef", 3), None);
        let s = line_end_stats(b"a\rb\nc\r\n");
        assert_eq!((s.bare_cr, s.bare_lf, s.any_cr), (1, 1, true));
        assert_eq!(strip_mbox_line(b"From x y\nA: b\n"), b"A: b\n");
        assert_eq!(strip_mbox_line(b"From: x\n"), b"From: x\n");
    }
}
