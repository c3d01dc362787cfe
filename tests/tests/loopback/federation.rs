//! Cooperating sites on loopback: every site has its own authority and
//! tracker, and every node and tracker reads the one federation file, as
//! `imageswarm node --federation` does. The demo's site (`demo`) holds the
//! master; the endorser's list and source are the demo's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use node::authority::{self, SiteDir};
use node::federation::Federation;
use node::net::{Membership, NodeConfig};
use p2p::tracker::{Tracker, TrackerConfig};
use proto::credential::SiteCas;
use proto::swarm::Role;
use tokio::task::JoinHandle;

use super::Site;

/// Cooperating sites, each node placed at one of them.
pub(crate) struct Federated {
    /// The nodes (node 0 is the master), the endorser and the source.
    pub(crate) site: Site,
    /// Each node's site and role.
    pub(crate) placed: Vec<(String, Role)>,
    /// Each node's metrics address.
    pub(crate) metrics: Vec<SocketAddr>,
    /// The federation file every node reads.
    pub(crate) file: PathBuf,
    /// The authorities of the sites, by name.
    pub(crate) authorities: Vec<(String, SiteDir)>,
    /// The sites' trackers, in the same order.
    pub(crate) tracker_addrs: Vec<libp2p::Multiaddr>,
    trackers: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Federated {
    fn drop(&mut self) {
        for t in &self.trackers {
            t.abort();
        }
    }
}

impl Federated {
    /// Sites named in `sites` (the first is the demo's own, with the
    /// master as node 0), each with a tracker answering every site's
    /// members, and nodes placed by `placed` (node 0 included). Every site
    /// but those in `outside` is in the federation file; an outside site
    /// gets a file of its own that also names itself.
    pub(crate) async fn new(
        sites: &[&str],
        outside: &[&str],
        placed: &[(&str, Role)],
        size: u64,
        chunk: u64,
    ) -> anyhow::Result<Self> {
        let mut site = Site::closed(placed.len() - 1, size, chunk).await?;
        site.kill_tracker().await;
        let dir = tempfile::tempdir()?;
        let mut authorities = vec![(sites[0].to_owned(), site.demo.site_dir())];
        for name in &sites[1..] {
            let d = SiteDir::new(&dir.path().join(name));
            authority::init(&d, name, 30, node::now())?;
            authorities.push(((*name).to_owned(), d));
        }
        let mut trackers = Vec::new();
        let mut addrs = Vec::new();
        for (name, _) in &authorities {
            let mut cas = SiteCas::new();
            // A site's tracker answers the sites of its own file.
            for (other, d) in &authorities {
                if other == name || !(outside.contains(&other.as_str()) || outside.contains(&name.as_str())) {
                    cas.add_ca(&std::fs::read(d.ca())?)?;
                }
            }
            let mut tcfg = TrackerConfig::loopback(Duration::from_secs(30));
            tcfg.site_cas = Some(cas);
            let mut t = Tracker::new(tcfg)?;
            let mut listening = t.listen_addrs().await;
            addrs.push(listening.remove(0));
            trackers.push(tokio::spawn(t.run()));
        }
        let write = |path: &PathBuf, names: &[&String]| -> anyhow::Result<()> {
            let text: String = authorities
                .iter()
                .zip(&addrs)
                .filter(|((n, _), _)| names.contains(&n))
                .map(|((n, d), a)| format!("[[site]]\nname = {n:?}\nca = {:?}\ntrackers = [\"{a}\"]\n\n", d.ca()))
                .collect();
            Ok(std::fs::write(path, text)?)
        };
        let file = dir.path().join("federation.toml");
        let members: Vec<&String> =
            authorities.iter().map(|(n, _)| n).filter(|n| !outside.contains(&n.as_str())).collect();
        write(&file, &members)?;
        for name in outside {
            let own = authorities.iter().map(|(n, _)| n).find(|n| n == name).expect("a named site");
            write(&dir.path().join(format!("{name}.toml")), &[members.as_slice(), &[own]].concat())?;
        }
        let metrics = placed.iter().map(|_| free_port()).collect::<anyhow::Result<_>>()?;
        let placed = placed.iter().map(|(s, r)| ((*s).to_owned(), *r)).collect();
        Ok(Self { site, placed, metrics, file, authorities, tracker_addrs: addrs, trackers, _dir: dir })
    }

    /// Node `i`'s configuration: a credential of its site and role, its
    /// site's CA, and the federation file (its own, at a site outside).
    pub(crate) fn config(&self, i: usize) -> anyhow::Result<NodeConfig> {
        let (name, role) = &self.placed[i];
        let d = &self.authorities.iter().find(|(n, _)| n == name).expect("a named site").1;
        let dir = &self.site.demo.data_dirs[i];
        let key = node::net::load_or_create_key(&dir.join("node.key"))?;
        let peer = key.public().to_peer_id();
        let raw = p2p::admission::ed25519_key(&peer).expect("an Ed25519 key");
        let credential = authority::issue(d, &peer.to_string(), &raw, *role, 1, node::now())?;
        let mut cas = SiteCas::new();
        cas.add_ca(&std::fs::read(d.ca())?)?;
        let mut c = self.site.config(i);
        c.site.clone_from(name);
        c.membership = Membership::Closed { credential, cas, crl_file: None };
        c.master = *role == Role::Master;
        c.gateway = *role == Role::Gateway;
        c.trackers.clear();
        c.metrics = Some(self.metrics[i]);
        let outside = self.file.with_file_name(format!("{name}.toml"));
        let file = if outside.exists() { outside } else { self.file.clone() };
        node::federation::apply(&Federation::load(&file)?, &mut c)?;
        Ok(c)
    }

    /// Starts every node, the master first.
    pub(crate) async fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.placed.len() {
            self.start(i).await?;
        }
        Ok(())
    }

    /// Starts node `i`. Its metrics port is picked free just before, and
    /// picked again if another process took it meanwhile.
    pub(crate) async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_edited(i, |_| {}).await
    }

    /// [`Federated::start`] with its configuration changed by `edit`.
    pub(crate) async fn start_edited(&mut self, i: usize, edit: impl Fn(&mut NodeConfig)) -> anyhow::Result<()> {
        for _ in 0..4 {
            self.metrics[i] = free_port()?;
            let mut c = self.config(i)?;
            edit(&mut c);
            match self.site.start_with(i, c).await {
                Err(e) if e.to_string().contains("Address already in use") => continue,
                started => return started,
            }
        }
        anyhow::bail!("no free port for node {i}'s metrics")
    }

    /// The nodes of site `name`.
    pub(crate) fn at(&self, name: &str) -> Vec<usize> {
        (0..self.placed.len()).filter(|&i| self.placed[i].0 == name).collect()
    }

    /// The sum over node `i`'s metric lines named `metric` with label
    /// `label`, or every label when `None`.
    pub(crate) fn metric(&self, i: usize, metric: &str, label: Option<&str>) -> anyhow::Result<u64> {
        super::metric(self.metrics[i], metric, label)
    }

    /// Chunk bytes that entered site `name` from other sites, as its
    /// running nodes count them.
    pub(crate) fn entered(&self, name: &str) -> anyhow::Result<u64> {
        let running = self.at(name).into_iter().filter(|&i| self.site.nodes[i].is_some());
        running.map(|i| self.metric(i, "imageswarm_site_bytes_in_total", None)).sum()
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
