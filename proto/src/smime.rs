//! S/MIME signing and message parsing for image lists.
//!
//! # Contract
//! * [`sign`] produces what `openssl smime -sign` produces and vmcatcher
//!   reads: a detached, clear-signed `multipart/signed` message, SHA-256,
//!   text mode (the content is canonicalised to CRLF before hashing and is
//!   written in that form), only the signer's certificate embedded.
//! * [`SignedMessage::parse`] accepts detached `multipart/signed` messages with
//!   either `protocol` spelling and a first part without MIME headers, as
//!   OpenSSL's reader does, and only as UTF-8 text: an image list is JSON
//!   and its signature base64, and OpenSSL quotes MIME header values in its
//!   errors, which rust-openssl cannot carry unless they are UTF-8 (it
//!   panics). The signature must name SHA-1 or SHA-2 digests, at least one:
//!   OpenSSL 3.0 leaks memory verifying a SignedData whose digests it
//!   cannot set up. Opaque (`application/pkcs7-mime`) messages are
//!   refused: vmcatcher cannot read them, so no producer may rely on them.
//! * The content is canonicalised exactly as OpenSSL's signer does it (each
//!   line's trailing CR/LF run becomes one CRLF), so LF-only content, the
//!   signer's CRLF output and a message converted to CRLF in transit all yield
//!   the same bytes. Those canonical bytes are what the signature covers,
//!   what the JSON is parsed from, and what identifies a list version.
//! * Nothing here decides trust: [`SignedMessage::content`] is unverified
//!   until [`crate::trust::verify_list`] has accepted it.

use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKeyRef, Private};
use openssl::stack::Stack;
use openssl::x509::{X509, X509Ref};

use crate::Error;

/// The largest signed list accepted, before any parsing.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// A parsed, *unverified* S/MIME message.
pub struct SignedMessage {
    pkcs7: Pkcs7,
    content: Vec<u8>,
}

impl std::fmt::Debug for SignedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedMessage").field("content_len", &self.content.len()).finish_non_exhaustive()
    }
}

impl SignedMessage {
    /// Splits a detached `multipart/signed` message into its signature and
    /// its canonical content.
    pub fn parse(message: &[u8]) -> Result<Self, Error> {
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(Error::Smime(format!(
                "message of {} bytes exceeds the {MAX_MESSAGE_BYTES}-byte cap",
                message.len()
            )));
        }
        if let Err(e) = std::str::from_utf8(message) {
            return Err(Error::Smime(format!(
                "not a text message: the byte at offset {} is not UTF-8",
                e.valid_up_to()
            )));
        }
        let (pkcs7, content) = Pkcs7::from_smime(message)
            .map_err(|e| Error::Smime(format!("not an S/MIME message: {}", first_reason(&e))))?;
        let Some(content) = content else {
            return Err(Error::Smime(
                "opaque (attached) signatures are not accepted; image lists are signed detached (multipart/signed)"
                    .into(),
            ));
        };
        if pkcs7.signed().is_none() {
            return Err(Error::Smime("the signature part is not PKCS#7 SignedData".into()));
        }
        if !crate::ffi::digests_known(&pkcs7) {
            return Err(Error::Smime("the signature names no digest, or one other than SHA-1 and SHA-2".into()));
        }
        Ok(Self { pkcs7, content: canonicalize(&content) })
    }

    /// The canonical (CRLF) content. Unverified.
    pub fn content(&self) -> &[u8] {
        &self.content
    }

    /// The certificates of the signers, as the message claims them.
    /// Unverified: for display only.
    pub fn claimed_signers(&self) -> Result<Vec<X509>, Error> {
        let none = empty_stack()?;
        let signers = self
            .pkcs7
            .signers(&none, Pkcs7Flags::empty())
            .map_err(|e| Error::Smime(format!("signer certificate not found in the message: {}", first_reason(&e))))?;
        Ok(signers.into_iter().collect())
    }

    /// Every certificate embedded in the message.
    pub(crate) fn embedded_certificates(&self) -> Result<Stack<X509>, Error> {
        let mut out = empty_stack()?;
        if let Some(certs) = self.pkcs7.signed().and_then(|s| s.certificates()) {
            for c in certs {
                out.push(c.to_owned()).map_err(|e| Error::Smime(first_reason(&e)))?;
            }
        }
        Ok(out)
    }

    pub(crate) fn pkcs7(&self) -> &Pkcs7 {
        &self.pkcs7
    }
}

/// Signs `content` (an image list's JSON) with the endorser's certificate
/// and key, returning the S/MIME message.
pub fn sign(content: &[u8], cert: &X509Ref, key: &PKeyRef<Private>) -> Result<Vec<u8>, Error> {
    let no_chain = empty_stack()?;
    let flags = Pkcs7Flags::DETACHED;
    let p7 = Pkcs7::sign(cert, key, &no_chain, content, flags).map_err(|e| Error::Sign(first_reason(&e)))?;
    p7.to_smime(content, flags).map_err(|e| Error::Sign(first_reason(&e)))
}

/// Canonicalises text as OpenSSL's S/MIME signer does: every line ending,
/// together with any carriage returns just before it, becomes CRLF. A last
/// line without a line feed keeps no line ending.
pub fn canonicalize(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 32);
    let mut lines = content.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let has_newline = lines.peek().is_some();
        let end = line.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
        out.extend_from_slice(&line[..end]);
        if has_newline {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

pub(crate) fn empty_stack() -> Result<Stack<X509>, Error> {
    Stack::new().map_err(|e| Error::Smime(first_reason(&e)))
}

/// The most specific text in an OpenSSL error stack.
pub(crate) fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .iter()
        .map(|err| match (err.reason(), err.data()) {
            (Some(r), Some(d)) => format!("{r} ({d})"),
            (Some(r), None) => r.to_owned(),
            (None, _) => err.to_string(),
        })
        .next()
        .unwrap_or_else(|| "unknown OpenSSL error".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalisation_matches_openssl() {
        assert_eq!(canonicalize(b"a\nb\n"), b"a\r\nb\r\n");
        assert_eq!(canonicalize(b"a\r\nb\r\n"), b"a\r\nb\r\n");
        assert_eq!(canonicalize(b"a\r\r\nb"), b"a\r\nb");
        assert_eq!(canonicalize(b"a \nb"), b"a \r\nb", "trailing spaces are signed");
        assert_eq!(canonicalize(b"x\ry\n"), b"x\ry\r\n", "a lone CR inside a line stays");
        assert_eq!(canonicalize(b""), b"");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for junk in [&b""[..], b"hello", b"MIME-Version: 1.0\n\n{}"] {
            assert!(matches!(SignedMessage::parse(junk), Err(Error::Smime(_))));
        }
    }

    /// Found by the `smime` fuzz target: a Content-Type with bytes that are
    /// not UTF-8, which OpenSSL quotes in its error and rust-openssl then
    /// panics on. It is refused before OpenSSL reads it.
    #[test]
    fn fuzz_crash_0e75d3a2_a_header_that_is_not_utf8_is_an_error_not_a_panic() {
        let message = include_bytes!("../tests/fixtures/fuzz/smime-crash-0e75d3a2");
        let err = SignedMessage::parse(message).unwrap_err().to_string();
        assert!(err.contains("not a text message") && err.contains("offset 63"), "{err}");
        assert!(crate::trust::check_integrity(message).is_err());
    }

    /// Found by the `smime` fuzz target (LeakSanitizer): a SignedData whose
    /// digests OpenSSL cannot set up makes `PKCS7_verify` leak its copy of
    /// the content. It is refused before verification.
    #[test]
    fn fuzz_leak_82833fac_a_signature_without_a_usable_digest_is_refused_before_verification() {
        let message = include_bytes!("../tests/fixtures/fuzz/smime-leak-82833fac");
        let err = SignedMessage::parse(message).unwrap_err().to_string();
        assert!(err.contains("digest"), "{err}");
    }
}
