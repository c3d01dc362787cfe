//! The two libcrypto functions that the `openssl` crate does not wrap.
//!
//! Both are exported by the libcrypto that `openssl-sys` already links.

use std::ffi::{CStr, c_char, c_int};
use std::ptr;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
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
