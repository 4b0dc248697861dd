//! Before/after pairs for every rule of mfp1: what relays change must keep the fingerprint,
//! what makes a new message must change it.
#![allow(clippy::unwrap_used)] // reason: test code; a failure should stop the test loudly

use base64::Engine as _;
use ringlog_protocol::fingerprint::{fingerprint, Defect};

/// What a transformation must do to the fingerprints.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// mfp1 (and so mfp1-lite and the body hash) unchanged.
    Same,
    /// mfp1 changes.
    Differs,
    /// mfp1 changes but mfp1-lite stays.
    LiteSame,
}

fn check(name: &str, before: &[u8], after: &[u8], expect: Expect) {
    let (a, b) = (fingerprint(before), fingerprint(after));
    match expect {
        Expect::Same => {
            assert_eq!(a.mfp1, b.mfp1, "{name}: mfp1 must stay");
            assert_eq!(a.mfp1_lite, b.mfp1_lite, "{name}: mfp1-lite must stay");
            assert_eq!(a.body, b.body, "{name}: body hash must stay");
        }
        Expect::Differs => assert_ne!(a.mfp1, b.mfp1, "{name}: mfp1 must change"),
        Expect::LiteSame => {
            assert_ne!(a.mfp1, b.mfp1, "{name}: mfp1 must change");
            assert_eq!(a.mfp1_lite, b.mfp1_lite, "{name}: mfp1-lite must stay");
        }
    }
}

/// A long body line (1500 octets, no spaces) that an MTA must break.
fn long_line() -> String {
    (0..1500).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// The plain message every transformation starts from (CRLF, 8bit UTF-8 body).
fn base_headers() -> Vec<String> {
    [
        "Return-Path: <alice@example.org>",
        "Received: from mail.example.org (mail.example.org [192.0.2.1])",
        "\tby mx.example.net (Postfix) with ESMTP id 1234; Tue, 10 Feb 2004 18:14:05 +0000",
        "From: Alice Example <alice@Example.ORG>",
        "To: bob@example.net, \"Carol\" <carol@example.net>",
        "Subject: Grüße aus Köln",
        "Date: Tue, 10 Feb 2004 10:14:01 -0800",
        "Message-ID: <abc.123@example.org>",
        "References: <r1@example.org> <r2@example.org> <r3@example.org>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn base_body() -> Vec<String> {
    vec![
        "Hallo Bob,".into(),
        "".into(),
        "Grüße — ein Test mit = Zeichen.".into(),
        long_line(),
        "".into(),
        "-- ".into(),
        "Alice".into(),
    ]
}

fn assemble(headers: &[String], body: &[String], eol: &str) -> Vec<u8> {
    let mut s = String::new();
    for h in headers {
        s.push_str(h);
        s.push_str(eol);
    }
    s.push_str(eol);
    for l in body {
        s.push_str(l);
        s.push_str(eol);
    }
    s.into_bytes()
}

fn base() -> Vec<u8> {
    assemble(&base_headers(), &base_body(), "\r\n")
}

/// Replaces the header field starting with `prefix` by `lines` (which may fold).
fn with_header(prefix: &str, lines: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for h in base_headers() {
        if h.starts_with(prefix) {
            out.extend(lines.iter().map(|s| s.to_string()));
        } else {
            out.push(h);
        }
    }
    out
}

fn header_cte(value: &str) -> Vec<String> {
    with_header("Content-Transfer-Encoding:", &[&format!("Content-Transfer-Encoding: {value}")])
}

/// A simple quoted-printable encoder as a relay without 8BITMIME would use.
fn qp_encode(text: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in text {
        let mut enc = String::new();
        let bytes = line.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let piece = if b == b'=' || b >= 127 || (last && (b == b' ' || b == b'\t')) {
                format!("={b:02X}")
            } else {
                (b as char).to_string()
            };
            if enc.len() + piece.len() > 75 {
                out.push(format!("{enc}="));
                enc.clear();
            }
            enc.push_str(&piece);
        }
        out.push(enc);
    }
    out
}

fn b64_lines(data: &[u8], width: usize) -> Vec<String> {
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    enc.as_bytes().chunks(width).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect()
}

fn body_bytes_crlf() -> Vec<u8> {
    let mut s = String::new();
    for l in base_body() {
        s.push_str(&l);
        s.push_str("\r\n");
    }
    s.into_bytes()
}

/// Breaks every line of 998 or more octets after 990 octets with CRLF SP, as an MTA does.
fn mta_break(body: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for l in body {
        let mut rest = l.as_str();
        let mut first = true;
        while rest.len() > 990 + usize::from(!first) {
            let cut = if first { 990 } else { 989 };
            let (head, tail) = rest.split_at(cut);
            out.push(if first { head.to_string() } else { format!(" {head}") });
            rest = tail;
            first = false;
        }
        out.push(if first { rest.to_string() } else { format!(" {rest}") });
    }
    out
}

#[test]
fn relay_changes_keep_mfp1() {
    let base = base();
    let lf = assemble(&base_headers(), &base_body(), "\n");
    let mut mbox = b"From alice@example.org Tue Feb 10 18:14:05 2004\n".to_vec();
    mbox.extend_from_slice(&lf);

    let mut traced = vec![
        "Received: from mx.example.net by inbound.example.com with ESMTPS id 99; Tue, 10 Feb 2004 18:14:06 +0000".to_string(),
        "DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1; h=from:to:subject;".into(),
        " bh=abc=; b=def".into(),
        "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=example.net; s=arc; b=xyz".into(),
        "ARC-Message-Signature: i=1; a=rsa-sha256; d=example.net; s=arc; b=xyz".into(),
        "ARC-Authentication-Results: i=1; mx.example.net; spf=pass".into(),
        "Authentication-Results: inbound.example.com; dkim=pass; spf=pass".into(),
        "Received-SPF: pass (example.net: domain of example.org designates 192.0.2.1)".into(),
        "Delivered-To: bob@example.net".into(),
        "X-Original-To: bob@example.net".into(),
        "X-Spam-Status: No, score=-1.0".into(),
        "Resent-From: postmaster@example.net".into(),
        "List-Id: <friends.example.net>".into(),
    ];
    traced.extend(base_headers());
    let traced = assemble(&traced, &base_body(), "\r\n");

    let refolded = assemble(
        &{
            let h = with_header(
                "References:",
                &["References: <r1@example.org>", "\t<r2@example.org>", "  <r3@example.org>"],
            );
            let mut out = Vec::new();
            for l in h {
                if l.starts_with("To:") {
                    out.push("To: bob@example.net,".to_string());
                    out.push("    \"Carol\" <carol@example.net>".to_string());
                } else if l.starts_with("Subject:") {
                    out.push("Subject:   Grüße".to_string());
                    out.push("\t aus  Köln ".to_string());
                } else {
                    out.push(l);
                }
            }
            out
        },
        &base_body(),
        "\r\n",
    );

    let qp = assemble(&header_cte("quoted-printable"), &qp_encode(&base_body()), "\r\n");
    let b64 = assemble(&header_cte("base64"), &b64_lines(&body_bytes_crlf(), 76), "\r\n");
    let broken = assemble(&base_headers(), &mta_break(&base_body()), "\r\n");

    let mut trailing = base_body();
    trailing[0].push_str("  \t");
    trailing[2].push(' ');
    trailing.push("".into());
    trailing.push("   ".into());
    trailing.push("".into());
    let trailing = assemble(&base_headers(), &trailing, "\r\n");

    let encoded_utf8 = assemble(
        &with_header(
            "Subject:",
            &["Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_?= =?utf-8?b?S8O2bG4=?="],
        ),
        &base_body(),
        "\r\n",
    );
    // ISO-8859-1 raw octets and the same text as a Latin-1 encoded-word.
    let mut latin1_raw = Vec::new();
    for h in base_headers() {
        if h.starts_with("Subject:") {
            latin1_raw.extend_from_slice(b"Subject: Gr\xfc\xdfe aus K\xf6ln\r\n");
        } else {
            latin1_raw.extend_from_slice(h.as_bytes());
            latin1_raw.extend_from_slice(b"\r\n");
        }
    }
    latin1_raw.extend_from_slice(b"\r\n");
    latin1_raw.extend_from_slice(&body_bytes_crlf());
    let display_encoded = assemble(
        &with_header("From:", &["From: =?iso-8859-1?q?Alice_Exampl=E9?= <alice@example.org.>"]),
        &base_body(),
        "\r\n",
    );

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("crlf to lf", lf),
        ("leading mbox From line (and lf)", mbox),
        ("trace, auth and forwarding fields added", traced),
        ("headers and References refolded", refolded),
        ("8bit to quoted-printable", qp),
        ("8bit to base64", b64),
        ("long line broken by an MTA", broken),
        ("trailing whitespace and blank lines", trailing),
        ("raw 8-bit subject vs utf-8 encoded-words", encoded_utf8),
        ("display name encoded, domain case and dot", display_encoded),
    ];
    for (name, after) in &cases {
        check(name, &base, after, Expect::Same);
    }
    // Raw ISO-8859-1 header octets equal the same text in encoded-words.
    check(
        "raw latin-1 subject vs latin-1 encoded-word",
        &latin1_raw,
        &assemble(
            &with_header("Subject:", &["Subject: =?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?="]),
            &base_body(),
            "\r\n",
        ),
        Expect::Same,
    );
    assert!(fingerprint(&latin1_raw).defects.contains(&Defect::InvalidUtf8Header));
    // The raw latin-1 reading is the same text as raw UTF-8.
    check("raw latin-1 vs raw utf-8 subject", &latin1_raw, &base, Expect::Same);
}

/// A two-part message: text (8bit) and a binary attachment (base64).
fn multipart(text_part: &[String], text_cte: &str, attachment: &[String]) -> Vec<u8> {
    let mut h =
        with_header("Content-Type:", &["Content-Type: multipart/mixed;", " boundary=\"=_b1\""]);
    h.retain(|l| !l.starts_with("Content-Transfer-Encoding"));
    let mut body = vec!["This is a MIME message.".to_string(), "--=_b1".into()];
    body.push("Content-Type: text/plain; charset=\"UTF-8\"".into());
    body.push(format!("Content-Transfer-Encoding: {text_cte}"));
    body.push("".into());
    body.extend(text_part.iter().cloned());
    body.push("--=_b1".into());
    body.push("Content-Type: application/octet-stream; name=\"x.bin\"".into());
    body.push("Content-Transfer-Encoding: base64".into());
    body.push("".into());
    body.extend(attachment.iter().cloned());
    body.push("--=_b1--".into());
    body.push("epilogue".into());
    assemble(&h, &body, "\r\n")
}

#[test]
fn relay_changes_inside_mime_keep_mfp1() {
    let payload: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let before = multipart(&base_body(), "8bit", &b64_lines(&payload, 76));
    let qp = multipart(&qp_encode(&base_body()), "quoted-printable", &b64_lines(&payload, 64));
    check("text part to qp, attachment rewrapped", &before, &qp, Expect::Same);
    let broken = multipart(&mta_break(&base_body()), "8bit", &b64_lines(&payload, 76));
    check("long line in a part broken", &before, &broken, Expect::Same);
    let other_epilogue = String::from_utf8(before.clone())
        .unwrap()
        .replace("This is a MIME message.", "Preamble differs")
        .replace("epilogue", "other epilogue");
    check("preamble and epilogue ignored", &before, other_epilogue.as_bytes(), Expect::Same);
    let fp = fingerprint(&before);
    assert_eq!(fp.leaves.len(), 2);
    let mut other = payload.clone();
    other[10] ^= 1;
    let changed = multipart(&base_body(), "8bit", &b64_lines(&other, 76));
    let fp2 = fingerprint(&changed);
    assert_ne!(fp.mfp1, fp2.mfp1, "attachment changed");
    assert_eq!(fp.leaves[0], fp2.leaves[0], "text leaf stays");
    assert_ne!(fp.leaves[1], fp2.leaves[1], "attachment leaf changes");
}

#[test]
fn new_messages_change_mfp1() {
    let base = base();
    let tagged = assemble(
        &with_header("Subject:", &["Subject: [friends] Grüße aus Köln"]),
        &base_body(),
        "\r\n",
    );
    let mut footer = base_body();
    footer.extend([
        "_______________________________________________".to_string(),
        "friends mailing list".into(),
        "https://lists.example.net/friends".into(),
    ]);
    let footer = assemble(&base_headers(), &footer, "\r\n");
    let rewritten = assemble(
        &with_header("From:", &["From: Alice Example via friends <friends@lists.example.net>"]),
        &base_body(),
        "\r\n",
    );
    let mut injected = base_headers();
    injected.insert(3, "From: ceo@example.org".into());
    let injected = assemble(&injected, &base_body(), "\r\n");
    let mut body = base_body();
    body[0] = "Hallo Bub,".into();
    let other_body = assemble(&base_headers(), &body, "\r\n");
    let other_to =
        assemble(&with_header("To:", &["To: mallory@example.net"]), &base_body(), "\r\n");
    let other_type = assemble(
        &with_header("Content-Type:", &["Content-Type: text/html; charset=utf-8"]),
        &base_body(),
        "\r\n",
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("list subject tag", tagged),
        ("list footer", footer),
        ("From rewritten by a list", rewritten),
        ("second From injected", injected.clone()),
        ("different body", other_body),
        ("different recipient", other_to),
        ("different content type", other_type),
    ];
    for (name, after) in &cases {
        check(name, &base, after, Expect::Differs);
    }
    assert!(fingerprint(&injected).defects.contains(&Defect::DuplicateFrom));
}

#[test]
fn lite_ignores_added_message_id_and_date() {
    let without: Vec<String> = base_headers()
        .into_iter()
        .filter(|h| !h.starts_with("Message-ID") && !h.starts_with("Date"))
        .collect();
    let before = assemble(&without, &base_body(), "\r\n");
    let mut added = without.clone();
    added.push("Message-ID: <added.by.mta@mx.example.net>".into());
    added.push("Date: Tue, 10 Feb 2004 18:14:05 +0000".into());
    check(
        "Message-ID and Date added by an MTA",
        &before,
        &assemble(&added, &base_body(), "\r\n"),
        Expect::LiteSame,
    );
    // The same instant in another zone is the same date.
    check(
        "date written in another zone",
        &base(),
        &assemble(
            &with_header("Date:", &["Date: Tue, 10 Feb 2004 19:14:01 +0100 (CET)"]),
            &base_body(),
            "\r\n",
        ),
        Expect::Same,
    );
}

#[test]
fn line_end_repairs() {
    let base = base();
    // A bare LF in the body of a CRLF message becomes CRLF.
    let text = String::from_utf8(base.clone()).unwrap();
    let bare = text.replacen("Hallo Bob,\r\n", "Hallo Bob,\n", 1);
    let fp = fingerprint(bare.as_bytes());
    assert_eq!(fp.mfp1, fingerprint(&base).mfp1);
    assert!(fp.defects.contains(&Defect::BareLineEnd));
    // In a CRLF header block a bare LF is whitespace (Exim's repair): a field glued on after it
    // does not become a field of its own.
    let glued = text.replacen(
        "Subject: Grüße aus Köln\r\n",
        "Subject: Grüße aus Köln\nFrom: ceo@example.org\r\n",
        1,
    );
    let fp = fingerprint(glued.as_bytes());
    assert!(fp.defects.contains(&Defect::GluedField));
    assert!(!fp.defects.contains(&Defect::DuplicateFrom));
    assert_ne!(fp.mfp1, fingerprint(&base).mfp1, "subject text changed");
}
