//! Shared test kit for imageswarm's workspace tests.
//!
//! * [`Pki`]: a throw-away PKI made with the `openssl` command line
//!   (`pki.sh` documents every file), generated once per test binary.
//! * [`list_json`]: a small valid image list to sign.
//! * [`openssl`]: runs the `openssl` command line, e.g. to sign a list the
//!   way existing producers do.
//! * [`http`]: a loopback HTTP server that can serve wrong, short,
//!   oversized and slow data.
//! * [`procfs`]: a process's CPU, memory, descriptors and threads, for the
//!   load benchmarks.

pub mod http;
pub mod procfs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use proto::Timestamp;
use serde_json::json;

/// The endorser certificate's subject, OpenSSL one-line form.
pub const ENDORSER_DN: &str = "/DC=org/DC=imageswarm-test/OU=Endorsers/CN=Alice Endorser";
/// The second endorser's subject.
pub const BOB_DN: &str = "/DC=org/DC=imageswarm-test/OU=Endorsers/CN=Bob Endorser";
/// The revoked endorser's subject.
pub const REVOKED_DN: &str = "/DC=org/DC=imageswarm-test/OU=Endorsers/CN=Revoked Endorser";
/// The test CA's subject (the issuer of every endorser certificate).
pub const CA_DN: &str = "/DC=org/DC=imageswarm-test/CN=imageswarm Test CA";
/// The serverAuth-only certificate's subject.
pub const SERVER_DN: &str = "/DC=org/DC=imageswarm-test/CN=host.example.org";
/// Certificates are valid from one day before generation for this many days.
pub const CERT_DAYS: i64 = 3650;
/// The current CRL is valid for this many days after generation.
pub const CRL_DAYS: i64 = 30;

/// A generated PKI in a directory of its own.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    generated_at: i64,
}

impl Pki {
    /// Generates a fresh PKI under `base` (tests pass `CARGO_TARGET_TMPDIR`).
    pub fn generate(base: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(base)?;
        let dir = tempfile::Builder::new().prefix("pki-").tempdir_in(base)?.keep();
        let status = Command::new("bash")
            .arg("-c")
            .arg(include_str!("pki.sh"))
            .arg("pki.sh")
            .arg(&dir)
            .status()
            .context("running bash for pki.sh")?;
        if !status.success() {
            bail!("pki.sh failed with {status}");
        }
        // After the CRLs were issued, so that "now" is inside their validity.
        let generated_at = now() + 1;
        Ok(Self { dir, generated_at })
    }

    /// One PKI per test binary.
    pub fn shared(base: &str) -> &'static Self {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| Self::generate(Path::new(base)).expect("generating the test PKI"))
    }

    /// A file of the PKI (see `pki.sh`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The bytes of a file of the PKI.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    /// Unix time at which the PKI was generated.
    pub fn generated_at(&self) -> i64 {
        self.generated_at
    }

    /// Signs `content` with `openssl smime -sign`, once per named signer
    /// (`"endorser"` uses `endorser.pem` and `endorser.key`), plus `extra`
    /// arguments.
    pub fn openssl_sign(&self, content: &[u8], signers: &[&str], extra: &[&str]) -> Vec<u8> {
        let mut args: Vec<String> = vec!["smime".into(), "-sign".into()];
        for s in signers {
            args.push("-signer".into());
            args.push(self.path(&format!("{s}.pem")).display().to_string());
            args.push("-inkey".into());
            args.push(self.path(&format!("{s}.key")).display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        openssl(&args, content).expect("openssl smime -sign")
    }
}

/// Runs `openssl` with `args`, feeding `stdin`; returns stdout.
pub fn openssl(args: &[String], stdin: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting openssl")?;
    child.stdin.take().context("openssl stdin")?.write_all(stdin)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Formats Unix time the way image lists write dates.
pub fn list_date(unix: i64) -> String {
    Timestamp::from_unix(unix).map(|t| t.to_string()).unwrap_or_default()
}

/// A valid image list with one image, endorsed by `dn` issued by `ca`,
/// created at `created` and expiring at `expires` (Unix times).
pub fn list_json(dn: &str, ca: &str, version: &str, created: i64, expires: i64) -> Vec<u8> {
    let doc = json!({"hv:imagelist": {
        "dc:identifier": "4e186b44-2c64-40ea-97d5-e9e5c0bce059",
        "dc:date:created": list_date(created),
        "dc:date:expires": list_date(expires),
        "dc:title": "test list",
        "dc:description": "a list made by the test kit",
        "dc:source": "imageswarm tests",
        "hv:version": version,
        "hv:uri": "https://lists.example.org/test.list",
        "x:unknown": {"kept": true},
        "hv:endorser": {"hv:x509": {
            "hv:dn": dn, "hv:ca": ca, "hv:email": "alice@example.org", "dc:creator": "Alice Endorser"
        }},
        "hv:images": [{"hv:image": {
            "dc:identifier": "488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d",
            "dc:title": "test image", "dc:description": "", "hv:uri": "https://images.example.org/a.img",
            "hv:size": 1024, "sl:checksum:sha512": "8b4c269a60da1061b434b696c4a89293bea847b66bd8ba486a914d4209df651193ee8d454f8231840b7500fab6740620c7111d9a17d08b743133dc393ba2c0d4",
            "hv:version": "1", "sl:arch": "x86_64", "sl:os": "Linux", "sl:osversion": "12",
            "sl:comments": "", "hv:hypervisor": "kvm"
        }}]
    }});
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The synopses of `program` that a document (docs/CLI.md) shows in its
/// plain code blocks: for each, the subcommand words (after `--data-dir D`)
/// and every `--flag` it names, so that a test can check each against the
/// program's `--help`. A synopsis is a line that starts with `program`,
/// with the indented lines after it.
pub fn synopses(doc: &str, program: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let mut lines: Vec<String> = Vec::new();
    let mut block: Option<bool> = None;
    // Whether the line before belongs to a synopsis of `program`.
    let mut open = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            block = match block {
                None => Some(line.trim() == "```"),
                Some(_) => None,
            };
            open = false;
            continue;
        }
        if block != Some(true) {
            continue;
        }
        if line.starts_with(&format!("{program} ")) {
            lines.push(line.to_owned());
            open = true;
        } else if open && line.starts_with(' ') {
            if let Some(last) = lines.last_mut() {
                last.push_str(line);
            }
        } else {
            open = false;
        }
    }
    lines.iter().map(|l| synopsis(l)).collect()
}

fn synopsis(line: &str) -> (Vec<String>, Vec<String>) {
    let mut tokens = line.split_whitespace().skip(1).peekable();
    if tokens.peek() == Some(&"--data-dir") {
        tokens.nth(1);
    }
    let mut words = Vec::new();
    while let Some(t) = tokens.peek() {
        let first = t.split('|').next().unwrap_or("");
        if first.is_empty() || !first.chars().all(|c| c.is_ascii_lowercase() || c == '-') || first.starts_with('-') {
            break;
        }
        words.push(first.to_owned());
        tokens.next();
    }
    let flags = line
        .split(|c: char| c.is_whitespace() || "()[]|".contains(c))
        .filter_map(|t| t.strip_prefix("--"))
        .map(|f| format!("--{}", f.trim_end_matches('.').split('=').next().unwrap_or(f)))
        .filter(|f| f.len() > 2)
        .collect();
    (words, flags)
}

/// Whether a `--help` text lists `flag` (as a whole word: `--metrics` is not
/// `--metrics-port`).
pub fn lists_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag)
        .any(|(i, _)| !help[i + flag.len()..].starts_with(|c: char| c.is_ascii_lowercase() || c == '-'))
}
