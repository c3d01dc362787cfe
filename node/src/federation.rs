//! Joining a node to the cooperating sites of a federation file
//! ([`p2p::federation`]).
//!
//! # Contract
//! [`apply`] makes a node's configuration that of a node of the federation:
//! it admits the members of exactly the sites the file names besides its
//! own, its gateways arrange themselves by the file's order, and without
//! trackers of its own it takes its site's, or, a gateway or master, every
//! site's.

pub use p2p::federation::{FederatedSite, Federation};

use crate::net::{Membership, NodeConfig};
use crate::{Error, Result};

/// Makes `c` a node of `fed` (see the module docs). Fails unless the file
/// names the node's site.
pub fn apply(fed: &Federation, c: &mut NodeConfig) -> Result<()> {
    let own = fed
        .site(&c.site)
        .ok_or_else(|| Error::Invalid(format!("the federation file does not name this node's site {:?}", c.site)))?;
    if c.trackers.is_empty() {
        c.trackers = if c.master || c.gateway {
            fed.sites.iter().flat_map(|s| s.trackers.iter().cloned()).collect()
        } else {
            own.trackers.clone()
        };
    }
    if let Membership::Closed { cas, .. } = &mut c.membership {
        fed.add_cas(cas).map_err(|e| Error::Invalid(e.to_string()))?;
    }
    c.federation = fed.sites.iter().map(|s| s.name.clone()).collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::{Path, PathBuf};

    use proto::credential::SiteCas;

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
        let mut cas = SiteCas::new();
        f.add_cas(&mut cas).unwrap();
        assert_eq!(cas.sites().collect::<Vec<_>>(), ["a", "b"]);

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
