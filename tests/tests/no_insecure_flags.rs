//! T2: no verification path may switch signer-certificate verification off
//! or accept any purpose. This scans every Rust source of the workspace; it
//! fails the build's tests the moment one of these names appears in code.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};

const FORBIDDEN: [&str; 5] = ["NOVERIFY", "NO_SIGNER_CERT_VERIFY", "-noverify", "X509PurposeId::ANY", "PURPOSE_ANY"];

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_sources(&path, out);
            }
        } else if name.ends_with(".rs") || name.ends_with(".sh") {
            out.push(path);
        }
    }
}

#[test]
fn t2_no_noverify_or_purpose_any_in_the_workspace() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let this_file = Path::new(env!("CARGO_MANIFEST_DIR")).join(file!().trim_start_matches("tests/"));
    let mut files = Vec::new();
    rust_sources(root, &mut files);
    assert!(files.iter().any(|p| p.ends_with("proto/src/trust.rs")), "the scan must see proto");
    let mut hits = Vec::new();
    for f in files.iter().filter(|f| f.file_name() != this_file.file_name()) {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            for word in FORBIDDEN {
                // Prose that names the rule (doc comments) is fine; code is not.
                let code = line.trim_start();
                if line.contains(word) && !code.starts_with("//") {
                    hits.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(hits.is_empty(), "insecure verification flags found:\n{}", hits.join("\n"));
}
