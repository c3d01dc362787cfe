//! The federation file: which sites cooperate, and how to reach them.
//!
//! ```toml
//! [[site]]
//! name = "a"
//! ca = "/etc/imageswarm/sites/a.pem"   # the site's CA certificate, from `site init`
//! trackers = ["/ip4/192.0.2.10/tcp/7000/p2p/12D3KooW..."]
//! ```
//!
//! # Contract
//! * [`Federation::load`] reads the file and every CA it names, and fails,
//!   naming the site and the field, unless: every site has a name, no name
//!   is repeated, every CA file is a site CA whose subject names that very
//!   site (`O=`), and every tracker address ends in `/p2p/<peer id>`. A
//!   relative CA path is taken from the file's directory.
//! * Every node and tracker of every cooperating site reads the same file,
//!   so the sites agree on who cooperates ([`Federation::add_cas`]) and on
//!   their order, which is the order in which the sites split each image
//!   ([`proto::swarm::FetchStripe`]).

use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use proto::credential::SiteCas;
use serde::Deserialize;

use crate::transport::peer_of;
use crate::{Error, Result};

/// One cooperating site.
#[derive(Debug, Clone)]
pub struct FederatedSite {
    /// Its name, as its credentials name it.
    pub name: String,
    /// Its CA certificate (PEM).
    pub ca: Vec<u8>,
    /// Its trackers, each with `/p2p/<peer id>`.
    pub trackers: Vec<Multiaddr>,
}

/// The cooperating sites, in the file's order.
#[derive(Debug, Clone)]
pub struct Federation {
    /// Every site the file names.
    pub sites: Vec<FederatedSite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    site: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    ca: PathBuf,
    #[serde(default)]
    trackers: Vec<Multiaddr>,
}

impl Federation {
    /// Reads and checks the federation file at `path` (see the module
    /// docs).
    pub fn load(path: &Path) -> Result<Self> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| Error::Federation(format!("reading {}: {e}", p.display())));
        let text =
            String::from_utf8(read(path)?).map_err(|_| Error::Federation(format!("{}: not UTF-8", path.display())))?;
        let file: File =
            toml::from_str(&text).map_err(|e| Error::Federation(format!("{}: {}", path.display(), e.message())))?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut sites: Vec<FederatedSite> = Vec::new();
        for e in file.site {
            let bad = |what: String| Error::Federation(format!("{}: site {:?}: {what}", path.display(), e.name));
            if e.name.is_empty() {
                return Err(bad("an empty name".into()));
            }
            if sites.iter().any(|s| s.name == e.name) {
                return Err(bad("named twice".into()));
            }
            let ca_path = dir.join(&e.ca);
            let ca = read(&ca_path)?;
            let named = SiteCas::new().add_ca(&ca).map_err(|err| bad(format!("ca {}: {err}", ca_path.display())))?;
            if named != e.name {
                return Err(bad(format!("ca {} is the authority of site {named:?}", ca_path.display())));
            }
            if let Some(t) = e.trackers.iter().find(|t| peer_of(t).is_none()) {
                return Err(bad(format!("tracker {t} lacks /p2p/<peer id>")));
            }
            sites.push(FederatedSite { name: e.name, ca, trackers: e.trackers });
        }
        if sites.is_empty() {
            return Err(Error::Federation(format!("{}: names no [[site]]", path.display())));
        }
        Ok(Self { sites })
    }

    /// The site named `name`, if the file names it.
    pub fn site(&self, name: &str) -> Option<&FederatedSite> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The CAs of every site the file names, added to `cas`.
    pub fn add_cas(&self, cas: &mut SiteCas) -> Result<()> {
        for s in &self.sites {
            cas.add_ca(&s.ca).map_err(|e| Error::Federation(format!("site {:?}: {e}", s.name)))?;
        }
        Ok(())
    }
}
