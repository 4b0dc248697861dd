//! Step 3 of mfp1: the canonical value of each field in the header set.

use mail_parser::parsers::MessageStream;
use mail_parser::{DateTime, HeaderValue};
use unicode_normalization::UnicodeNormalization;

/// Whitespace runs (SP, HTAB, CR, LF) collapsed to one space, ends trimmed.
pub(crate) fn collapse(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split([' ', '\t', '\r', '\n']).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Removes RFC 5322 comments outside quoted strings, each replaced by one space; quoted
/// strings and backslash escapes are kept as they are. Unclosed comments run to the end.
pub(crate) fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    let mut in_quote = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if depth > 0 {
            match c {
                '\\' => {
                    chars.next();
                }
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push(' ');
                    }
                }
                _ => {}
            }
            continue;
        }
        match c {
            '\\' if in_quote => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '"' => {
                in_quote = !in_quote;
                out.push(c);
            }
            '(' if !in_quote => depth = 1,
            _ => out.push(c),
        }
    }
    out
}

/// An address field: the addr-specs only, comma-joined.
pub(crate) fn addresses(value: &str) -> String {
    let s = strip_comments(value);
    let mut out: Vec<String> = Vec::new();
    let mut plain = String::new();
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    let mut in_quote = false;
    let mut chars = s.chars();
    let finish = |plain: &mut String, angle: &mut Option<String>, out: &mut Vec<String>| {
        let addr = angle.take().unwrap_or_else(|| std::mem::take(plain));
        plain.clear();
        let addr = match addr.strip_prefix('@') {
            // An obsolete source route `@a,@b:` before the address.
            Some(r) => r.split_once(':').map(|(_, a)| a.to_string()).unwrap_or_default(),
            None => addr,
        };
        if !addr.is_empty() {
            out.push(canonical_addr(&addr));
        }
    };
    while let Some(c) = chars.next() {
        let buf = if in_angle { angle.get_or_insert_with(String::new) } else { &mut plain };
        if in_quote {
            buf.push(c);
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        buf.push(n);
                    }
                }
                '"' => in_quote = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_quote = true;
                buf.push(c);
            }
            ' ' | '\t' | '\r' | '\n' => {}
            '>' if in_angle => in_angle = false,
            _ if in_angle => buf.push(c),
            '<' => {
                in_angle = true;
                angle = Some(String::new());
            }
            ',' | ';' => finish(&mut plain, &mut angle, &mut out),
            // A group name ends: it is dropped.
            ':' => plain.clear(),
            _ => buf.push(c),
        }
    }
    finish(&mut plain, &mut angle, &mut out);
    out.join(",")
}

/// One addr-spec: the local part verbatim, the domain lower-cased, without a trailing dot, as
/// IDNA A-labels.
fn canonical_addr(addr: &str) -> String {
    let mut in_quote = false;
    let mut escaped = false;
    let mut at = None;
    for (i, c) in addr.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '@' if !in_quote => at = Some(i),
            _ => {}
        }
    }
    let Some(at) = at else {
        return addr.to_string();
    };
    let (local, domain) = (&addr[..at], &addr[at + 1..]);
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let domain = if domain.is_ascii() {
        domain.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_lowercase())
    };
    format!("{local}@{domain}")
}

/// Subject: encoded-words decoded, NFC, whitespace collapsed.
pub(crate) fn subject(value: &str) -> String {
    let mut input = Vec::with_capacity(value.len() + 1);
    input.extend_from_slice(value.as_bytes());
    input.push(b'\n');
    let decoded = match MessageStream::new(&input).parse_unstructured() {
        HeaderValue::Text(t) => t.into_owned(),
        _ => String::new(),
    };
    let nfc: String = decoded.nfc().collect();
    collapse(&nfc)
}

/// Date: UTC `YYYY-MM-DDTHH:MM:SSZ`, or `?` and the collapsed raw value.
pub(crate) fn date(value: &str) -> String {
    if let Some(dt) = DateTime::parse_rfc822(value).filter(DateTime::is_valid) {
        let u = DateTime::from_timestamp(dt.to_timestamp());
        return format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            u.year, u.month, u.day, u.hour, u.minute, u.second
        );
    }
    format!("?{}", collapse(value))
}

/// Message-ID, In-Reply-To, References: the `<...>` tokens joined by one space.
pub(crate) fn msg_ids(value: &str) -> String {
    let s: String =
        strip_comments(value).chars().filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n')).collect();
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(open) = rest.find('<') {
        let Some(len) = rest[open..].find('>') else {
            break;
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&rest[open..open + len + 1]);
        rest = &rest[open + len + 1..];
    }
    if out.is_empty() {
        collapse(value)
    } else {
        out
    }
}

/// A parsed Content-Type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ContentType {
    /// `type/subtype;name=value;...` as it enters the header set and the body tree.
    pub canonical: String,
    /// The `boundary` parameter, unquoted.
    pub boundary: Option<String>,
}

impl ContentType {
    /// The default for a message or part without a Content-Type field.
    pub(crate) fn text_plain() -> Self {
        ContentType { canonical: "text/plain".to_string(), boundary: None }
    }

    pub(crate) fn is_multipart(&self) -> bool {
        self.canonical.starts_with("multipart/")
    }

    pub(crate) fn is_textlike(&self) -> bool {
        self.canonical.starts_with("text/") || self.canonical.starts_with("message/")
    }
}

/// Splits at `sep` outside quoted strings.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut in_quote = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            _ if c == sep && !in_quote => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A parameter value with its quotes removed (backslash escapes resolved).
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"') else {
        return v.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '"' => break,
            _ => out.push(c),
        }
    }
    out
}

/// Content-Type: `type/subtype` lower-cased (text/plain when it is not of that form), then the
/// parameters other than `boundary`, sorted, each as `;name=value`.
pub(crate) fn content_type(value: &str) -> ContentType {
    let s = strip_comments(value);
    let mut parts = split_unquoted(&s, ';').into_iter();
    let media: String = parts
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let valid = match media.split_once('/') {
        Some((t, st)) => !t.is_empty() && !st.is_empty() && !st.contains('/'),
        None => false,
    };
    let mut canonical = if valid { media } else { "text/plain".to_string() };
    let mut boundary = None;
    let mut params: Vec<String> = Vec::new();
    for p in parts {
        let Some((name, val)) = p.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let val = unquote(val.trim());
        if name == "boundary" {
            if boundary.is_none() {
                boundary = Some(val);
            }
            continue;
        }
        let val = if name == "charset" { val.to_lowercase() } else { val };
        params.push(format!("{name}={val}"));
    }
    params.sort();
    for p in params {
        canonical.push(';');
        canonical.push_str(&p);
    }
    ContentType { canonical, boundary }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    #[test]
    fn address_lists() {
        for (input, want) in [
            ("\"User 1\" <user1@Example.COM>", "user1@example.com"),
            ("user1@example.com (User 1)", "user1@example.com"),
            ("A <a@x.org>, b@Y.org.", "a@x.org,b@y.org"),
            ("friends: a@x.org, B <b@x.org>;, c@x.org", "a@x.org,b@x.org,c@x.org"),
            ("undisclosed-recipients:;", ""),
            ("<@relay.example:User@Example.org>", "User@example.org"),
            ("\"a@b\"@Example.org", "\"a@b\"@example.org"),
            ("x <a@bücher.example>", "a@xn--bcher-kva.example"),
            ("Doe (comment, with comma) <d@x.org>", "d@x.org"),
        ] {
            assert_eq!(addresses(input), want, "{input}");
        }
    }

    #[test]
    fn subjects_and_dates() {
        assert_eq!(subject(" =?utf-8?q?Gr=C3=B6=C3=9Fe?=  now "), "Größe now");
        assert_eq!(subject("=?iso-8859-1?q?Gr=F6=DFe?="), "Größe");
        assert_eq!(date("Mon, 09 Feb 04 23:17:44 GMT"), "2004-02-09T23:17:44Z");
        assert_eq!(date("Tue, 10 Feb 2004 10:14:01 -0800 (PST)"), "2004-02-10T18:14:01Z");
        assert_eq!(date(" not  a date"), "?not a date");
    }

    #[test]
    fn ids_and_types() {
        assert_eq!(msg_ids(" <a@b>\t(c)\n <c @d>"), "<a@b> <c@d>");
        assert_eq!(msg_ids(" garbage  id "), "garbage id");
        let ct = content_type("Multipart/Mixed; boundary=\"xx;y\"; Charset=\"UTF-8\" (c)");
        assert_eq!(ct.canonical, "multipart/mixed;charset=utf-8");
        assert_eq!(ct.boundary.as_deref(), Some("xx;y"));
        assert_eq!(content_type("garbage").canonical, "text/plain");
    }
}
