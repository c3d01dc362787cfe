//! Loading trust anchors from files: a CA bundle, an IGTF-style directory
//! (`<hash>.0` certificates, `<hash>.r0` CRLs), and extra CRL files.
//!
//! # Contract
//! A `--ca-file` or `--crl` that does not load is an error. In a
//! `--ca-dir`, a file that does not read or parse is skipped with a warning
//! naming it; the directory is an error only if no CA certificate loads
//! from it. Certificates and CRLs count once however many files hold them.

use std::path::{Path, PathBuf};

use proto::trust::TrustAnchors;

use crate::{Error, Result, fsutil};

/// Where a site's CA certificates and CRLs live.
#[derive(Debug, Clone, Default)]
pub struct TrustSources {
    /// A PEM bundle of CA certificates.
    pub ca_file: Option<PathBuf>,
    /// An IGTF-style directory.
    pub ca_dir: Option<PathBuf>,
    /// Extra CRL files (PEM or DER).
    pub crls: Vec<PathBuf>,
}

impl TrustSources {
    /// Reads every source into a [`TrustAnchors`].
    pub fn load(&self) -> Result<TrustAnchors> {
        let mut anchors = TrustAnchors::new();
        if let Some(file) = &self.ca_file {
            anchors.add_ca_pem(&fsutil::read(file)?).map_err(|e| in_file(file, e))?;
        }
        if let Some(dir) = &self.ca_dir {
            load_dir(&mut anchors, dir)?;
        }
        for crl in &self.crls {
            anchors.add_crl(&fsutil::read(crl)?).map_err(|e| in_file(crl, e))?;
        }
        if anchors.counts().0 == 0 {
            return Err(Error::Invalid("no CA certificate given: use --ca-file or --ca-dir".into()));
        }
        Ok(anchors)
    }
}

fn load_dir(anchors: &mut TrustAnchors, dir: &Path) -> Result<()> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io("listing", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let before = anchors.counts().0;
    for path in names {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // One file that does not read (fetch-crl mid-write, an odd bundle)
        // costs its own CA or CRL only: a CA whose CRL is missing fails its
        // lists closed, the others stay trusted.
        let added = fsutil::read(&path).and_then(|b| anchors.add_igtf_file(&name, &b).map_err(|e| in_file(&path, e)));
        if let Err(e) = added {
            tracing::warn!(file = %path.display(), error = %e, "a file of the CA directory was skipped");
        }
    }
    if anchors.counts().0 == before {
        return Err(Error::Invalid(format!(
            "{}: no CA certificates found (expected <hash>.0 or *.pem files)",
            dir.display()
        )));
    }
    Ok(())
}

fn in_file(path: &Path, e: proto::Error) -> Error {
    Error::Credential { path: path.into(), reason: e.to_string() }
}
