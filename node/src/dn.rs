//! Distinguished names as operators write them, read into the one form the
//! store and image lists use: OpenSSL's one-line form, `/DC=org/CN=Name`.
//!
//! # Contract
//! [`parse`] takes
//! * the one-line form as it is;
//! * OpenSSL 3's default form, `DC = org, DC = example, CN = Name` (the same
//!   order, `=` with spaces around it), as `openssl x509 -noout -subject`
//!   prints it;
//! * RFC 2253's form, `CN=Name,DC=example,DC=org` (most specific first, `=`
//!   without spaces), as `-nameopt RFC2253` prints it;
//!
//! each with or without the `subject=` or `issuer=` that OpenSSL puts in
//! front. Anything else, and a value that holds `/` (which the one-line form
//! cannot carry), is refused with the form to use. So a DN copied from
//! OpenSSL's output is never stored in a form that matches no certificate.

use crate::{Error, Result};

/// The one-line form of `input` (see the module docs).
pub fn parse(input: &str) -> Result<String> {
    let s = input.trim();
    let s = ["subject=", "issuer="]
        .iter()
        .find_map(|p| s.get(..p.len()).filter(|h| h.eq_ignore_ascii_case(p)).map(|_| s[p.len()..].trim()))
        .unwrap_or(s);
    if let Some(rdns) = s.strip_prefix('/') {
        let ok = rdns.split('/').all(|rdn| rdn.split_once('=').is_some_and(|(k, v)| !k.is_empty() && !v.is_empty()));
        return if ok { Ok(s.to_owned()) } else { Err(refused(input)) };
    }
    let parts = split_unescaped(s).ok_or_else(|| refused(input))?;
    let mut rdns = Vec::with_capacity(parts.len());
    let mut spaced = false;
    for part in &parts {
        let mut avas = Vec::with_capacity(part.len());
        for ava in part {
            let (k, v) = ava.split_once('=').ok_or_else(|| refused(input))?;
            spaced |= k.ends_with(' ') || v.starts_with(' ');
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                return Err(refused(input));
            }
            if v.contains('/') {
                return Err(Error::Invalid(format!(
                    "the DN `{input}` has a value with `/`, which the one-line form (/DC=org/CN=Name) that image lists use cannot carry"
                )));
            }
            avas.push(format!("{k}={v}"));
        }
        rdns.push(format!("/{}", avas.join("+")));
    }
    // RFC 2253 puts the most specific name first.
    if !spaced && parts.len() > 1 {
        rdns.reverse();
    }
    Ok(rdns.concat())
}

/// `s` cut into names at commas, and each name into its attributes at
/// pluses (a multi-valued name), where neither is escaped by a backslash
/// nor inside double quotes; the quotes and escapes undone, `\C3\A9` as the
/// bytes it names, and then written as OpenSSL's one-line form writes
/// them: bytes outside printable ASCII as `\xC3\xA9`.
fn split_unescaped(s: &str) -> Option<Vec<Vec<String>>> {
    let mut names: Vec<Vec<Vec<u8>>> = vec![vec![Vec::new()]];
    let mut quoted = false;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = || std::str::from_utf8(b.get(i + 1..i + 3)?).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
        let (bytes, step): (Option<u8>, usize) = match b[i] {
            b'\\' => match hex() {
                Some(x) => (Some(x), 3),
                None => (b.get(i + 1).copied(), 2),
            },
            b'"' => {
                quoted = !quoted;
                (None, 1)
            }
            b',' if !quoted => {
                names.push(vec![Vec::new()]);
                (None, 1)
            }
            b'+' if !quoted => {
                names.last_mut()?.push(Vec::new());
                (None, 1)
            }
            c => (Some(c), 1),
        };
        if let Some(x) = bytes {
            names.last_mut()?.last_mut()?.push(x);
        }
        i += step;
    }
    let one_line = |a: Vec<u8>| -> String {
        a.into_iter()
            .map(|x| if (0x20..0x7f).contains(&x) { char::from(x).to_string() } else { format!("\\x{x:02X}") })
            .collect()
    };
    Some(names.into_iter().map(|n| n.into_iter().map(one_line).collect()).collect())
}

fn refused(input: &str) -> Error {
    Error::Invalid(format!(
        "`{input}` is not a DN this tool reads: write it as /DC=org/DC=example/CN=Name (`openssl x509 -noout -subject \
         -nameopt compat` prints that form)"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ONE_LINE: &str = "/DC=org/DC=example/CN=Jane Doe, Endorser";

    #[test]
    fn every_form_openssl_prints_reads_as_the_one_line_form() {
        for written in [
            ONE_LINE,
            "  /DC=org/DC=example/CN=Jane Doe, Endorser ",
            "subject=/DC=org/DC=example/CN=Jane Doe, Endorser",
            r"DC = org, DC = example, CN = Jane Doe\, Endorser",
            r"subject=DC = org, DC = example, CN = Jane Doe\, Endorser",
            r"issuer=DC = org, DC = example, CN = Jane Doe\, Endorser",
            r"CN=Jane Doe\, Endorser,DC=example,DC=org",
        ] {
            assert_eq!(parse(written).unwrap(), ONE_LINE, "{written}");
        }
        assert_eq!(parse("CN = Test CA").unwrap(), "/CN=Test CA");
    }

    #[test]
    fn quotes_hex_escapes_and_multi_valued_names_read_as_openssl_3_prints_them() {
        // `openssl x509 -noout -subject` of such certificates, as printed.
        assert_eq!(
            parse(r#"subject=DC = org, O = "Acme; Labs, Inc", CN = Jane"#).unwrap(),
            "/DC=org/O=Acme; Labs, Inc/CN=Jane"
        );
        // As X509_NAME_oneline writes a UTF-8 é.
        assert_eq!(parse(r"DC = org, CN = Jos\C3\A9").unwrap(), r"/DC=org/CN=Jos\xC3\xA9");
        assert_eq!(parse(r"CN=Jos\C3\A9,DC=org").unwrap(), r"/DC=org/CN=Jos\xC3\xA9");
        assert_eq!(parse("DC = org, CN = a + UID = b").unwrap(), "/DC=org/CN=a+UID=b");
    }

    #[test]
    fn what_is_no_dn_is_refused_with_the_form_to_use() {
        for bad in ["", "Jane Doe", "/DC=org/Jane", "DC = org, Jane", "CN = a/b, DC = org", "=x", "/"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("/DC=org"), "{bad}: {e}");
        }
    }
}
