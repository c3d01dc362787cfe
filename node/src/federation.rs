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
//! * A node given the file ([`Federation::apply`]) trusts the credentials
//!   of exactly the sites it names besides its own; every site gets the
//!   same file, so the sites agree on who cooperates, and its order is the
//!   order in which the sites split each image
//!   ([`proto::swarm::FetchStripe`]).

use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use proto::credential::SiteCas;
use serde::Deserialize;

use crate::net::{Membership, NodeConfig};
use crate::{Error, Result, fsutil};

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
        let text = String::from_utf8(fsutil::read(path)?)
            .map_err(|_| Error::Invalid(format!("{}: not UTF-8", path.display())))?;
        let file: File =
            toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {}", path.display(), e.message())))?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut sites: Vec<FederatedSite> = Vec::new();
        for e in file.site {
            let bad = |what: String| Error::Invalid(format!("{}: site {:?}: {what}", path.display(), e.name));
            if e.name.is_empty() {
                return Err(bad("an empty name".into()));
            }
            if sites.iter().any(|s| s.name == e.name) {
                return Err(bad("named twice".into()));
            }
            let ca_path = dir.join(&e.ca);
            let ca = fsutil::read(&ca_path)?;
            let named = SiteCas::new().add_ca(&ca).map_err(|err| bad(format!("ca {}: {err}", ca_path.display())))?;
            if named != e.name {
                return Err(bad(format!("ca {} is the authority of site {named:?}", ca_path.display())));
            }
            if let Some(t) = e.trackers.iter().find(|t| crate::net::peer_of(t).is_none()) {
                return Err(bad(format!("tracker {t} lacks /p2p/<peer id>")));
            }
            sites.push(FederatedSite { name: e.name, ca, trackers: e.trackers });
        }
        if sites.is_empty() {
            return Err(Error::Invalid(format!("{}: names no [[site]]", path.display())));
        }
        Ok(Self { sites })
    }

    /// The site named `name`, if the file names it.
    pub fn site(&self, name: &str) -> Option<&FederatedSite> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The CAs of every site the file names.
    pub fn site_cas(&self) -> Result<SiteCas> {
        let mut cas = SiteCas::new();
        for s in &self.sites {
            cas.add_ca(&s.ca)?;
        }
        Ok(cas)
    }

    /// Makes `c` a node of the federation: it admits the members of every
    /// site the file names, its gateways arrange themselves by the file's
    /// order, and without trackers of its own it takes its site's, or, a
    /// gateway or master, every site's (where it finds the other sites'
    /// gateways and masters). Fails unless the file names the node's site.
    pub fn apply(&self, c: &mut NodeConfig) -> Result<()> {
        let own = self.site(&c.site).ok_or_else(|| {
            Error::Invalid(format!("the federation file does not name this node's site {:?}", c.site))
        })?;
        if c.trackers.is_empty() {
            c.trackers = if c.master || c.gateway {
                self.sites.iter().flat_map(|s| s.trackers.iter().cloned()).collect()
            } else {
                own.trackers.clone()
            };
        }
        if let Membership::Closed { cas, .. } = &mut c.membership {
            for s in &self.sites {
                cas.add_ca(&s.ca)?;
            }
        }
        c.federation = self.sites.iter().map(|s| s.name.clone()).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::authority::{self, SiteDir};

    fn site(dir: &Path, name: &str) -> PathBuf {
        let d = SiteDir::new(&dir.join(name));
        authority::init(&d, name, 30, crate::now()).unwrap();
        d.ca()
    }

    #[test]
    fn the_file_names_each_site_by_its_own_authority() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (site(t.path(), "a"), site(t.path(), "b"));
        let tracker = "/ip4/192.0.2.10/tcp/7000/p2p/12D3KooWD6Liyi3SMjHp1yanpNHPQrKPBVnToqVh2DyiJJ8wb5vn";
        let file = t.path().join("federation.toml");
        let write = |text: String| std::fs::write(&file, text).unwrap();
        write(format!(
            "[[site]]\nname = \"a\"\nca = \"a/ca.pem\"\ntrackers = [\"{tracker}\"]\n\n[[site]]\nname = \"b\"\nca = \"{}\"\n",
            b.display()
        ));
        let f = Federation::load(&file).unwrap();
        assert_eq!(f.sites.len(), 2);
        assert_eq!(f.site("a").unwrap().trackers.len(), 1, "a relative CA path is the file's directory's");
        assert_eq!(f.site_cas().unwrap().sites().collect::<Vec<_>>(), ["a", "b"]);

        for (text, says) in [
            (format!("[[site]]\nname = \"b\"\nca = \"{}\"\n", a.display()), "authority of site \"a\""),
            (
                format!("[[site]]\nname = \"a\"\nca = \"{0}\"\n[[site]]\nname = \"a\"\nca = \"{0}\"\n", a.display()),
                "twice",
            ),
            (
                format!(
                    "[[site]]\nname = \"a\"\nca = \"{}\"\ntrackers = [\"/ip4/192.0.2.10/tcp/7000\"]\n",
                    a.display()
                ),
                "/p2p/",
            ),
            (format!("[[site]]\nname = \"a\"\nca = \"{}\"\ncolour = \"red\"\n", a.display()), "colour"),
            ("site = []\n".to_owned(), "names no"),
        ] {
            write(text);
            let err = Federation::load(&file).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
