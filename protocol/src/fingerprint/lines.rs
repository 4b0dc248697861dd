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

pub(crate) fn line_end_stats(data: &[u8]) -> LineEndStats {
    let mut s = LineEndStats::default();
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                s.any_cr = true;
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                } else {
                    s.bare_cr += 1;
                }
            }
            b'\n' => s.bare_lf += 1,
            _ => {}
        }
        i += 1;
    }
    s
}

/// Turns every bare CR and bare LF into CRLF. Borrows when there is nothing to change.
pub(crate) fn to_crlf(data: &[u8]) -> Cow<'_, [u8]> {
    // Fast path: every LF is preceded by CR and every CR is followed by LF.
    let mut clean = true;
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                if data.get(i + 1) != Some(&b'\n') {
                    clean = false;
                    break;
                }
                i += 2;
                continue;
            }
            b'\n' => {
                clean = false;
                break;
            }
            _ => {}
        }
        i += 1;
    }
    if clean {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 2);
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Finds the next CRLF at or after `from`; returns its index.
pub(crate) fn find_crlf(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < data.len() {
        let rel = data.get(i..)?.iter().position(|&b| b == b'\n')?;
        let at = i + rel;
        if at > 0 && data[at - 1] == b'\r' && at - 1 >= from {
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
        assert_eq!(strip_mbox_line(b"From x y\nA: b\n"), b"A: b\n");
        assert_eq!(strip_mbox_line(b"From: x\n"), b"From: x\n");
    }
}
