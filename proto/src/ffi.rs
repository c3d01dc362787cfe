//! What the `openssl` crate does not wrap: two libcrypto functions, and a
//! look at a PKCS#7 SignedData's digest algorithms.
//!
//! All are exported by the libcrypto that `openssl-sys` already links.

use std::ffi::{CStr, c_char, c_int};
use std::ptr;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::pkcs7::Pkcs7Ref;
use openssl::x509::store::X509StoreBuilderRef;
use openssl::x509::{X509CrlRef, X509NameRef};

unsafe extern "C" {
    fn X509_STORE_add_crl(store: *mut openssl_sys::X509_STORE, crl: *mut openssl_sys::X509_CRL) -> c_int;
    fn X509_NAME_oneline(name: *const openssl_sys::X509_NAME, buf: *mut c_char, size: c_int) -> *mut c_char;
}

/// Adds a CRL to a store under construction. The store takes its own
/// reference, so `crl` stays owned by the caller.
pub(crate) fn store_add_crl(store: &mut X509StoreBuilderRef, crl: &X509CrlRef) -> Result<(), ErrorStack> {
    // SAFETY: both pointers come from live, owned OpenSSL objects borrowed
    // for the duration of the call; X509_STORE_add_crl increments the CRL's
    // reference count and does not retain `crl` beyond that reference.
    let rc = unsafe { X509_STORE_add_crl(store.as_ptr(), crl.as_ptr()) };
    if rc == 1 { Ok(()) } else { Err(ErrorStack::get()) }
}

/// Renders a name exactly as OpenSSL's `X509_NAME_oneline` does
/// (`/DC=ch/DC=cern/CN=...`), the form `hv:dn` and `hv:ca` are written in.
pub(crate) fn name_oneline(name: &X509NameRef) -> String {
    // SAFETY: with a null buffer X509_NAME_oneline allocates the result with
    // OPENSSL_malloc (or returns null on failure); we copy it out and free it
    // with OPENSSL_free exactly once.
    unsafe {
        let p = X509_NAME_oneline(name.as_ptr(), ptr::null_mut(), 0);
        if p.is_null() {
            return String::new();
        }
        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
        openssl_sys::OPENSSL_free(p.cast());
        s
    }
}

/// The digests a signed list may name: SHA-1 (lists signed before OpenSSL
/// 1.1 made SHA-256 the default) and SHA-2.
const DIGESTS: [c_int; 5] = [
    openssl_sys::NID_sha1,
    openssl_sys::NID_sha224,
    openssl_sys::NID_sha256,
    openssl_sys::NID_sha384,
    openssl_sys::NID_sha512,
];

/// Whether a SignedData names at least one digest algorithm and only ones
/// of [`DIGESTS`]. OpenSSL 3.0's `PKCS7_verify` leaks its copy of the
/// content when the digests cannot be set up (an empty or unknown set), so
/// such a message must not reach it.
pub(crate) fn digests_known(p7: &Pkcs7Ref) -> bool {
    // SAFETY: `p7` is a live PKCS7 whose type is SignedData (the caller
    // checked `signed()`), so `d.sign` is the SignedData or null; its
    // `md_algs` is a stack of X509_ALGOR owned by it, read only here and
    // not kept past the borrow.
    unsafe {
        let signed = (*p7.as_ptr()).d.sign;
        if signed.is_null() {
            return false;
        }
        let algs = (*signed).md_algs.cast::<openssl_sys::OPENSSL_STACK>();
        let n = openssl_sys::OPENSSL_sk_num(algs);
        n > 0
            && (0..n).all(|i| {
                let alg = openssl_sys::OPENSSL_sk_value(algs, i).cast::<openssl_sys::X509_ALGOR>();
                let mut obj = ptr::null();
                if !alg.is_null() {
                    openssl_sys::X509_ALGOR_get0(&mut obj, ptr::null_mut(), ptr::null_mut(), alg);
                }
                !obj.is_null() && DIGESTS.contains(&openssl_sys::OBJ_obj2nid(obj))
            })
    }
}
