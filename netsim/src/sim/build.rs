//! Setting a run up: the nodes a scenario names, their capacities and
//! swarm settings, which of them misbehave, and the first events.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;

use proto::bitfield::Bitfield;
use proto::manifest::{ChunkHash, ChunkSize, Manifest};
use proto::swarm::{Config, FetchStripe, PeerInfo, Role, Stripe, UploadPolicy};
use proto::transfer::Host;

use super::{Kind, Node, Options, Presence, Sim, faults, peering};
use crate::flows::{Capacities, Flows};
use crate::scenario::Scenario;
use crate::{Error, Rng};

/// The scenario's image: a manifest of stand-in hashes.
fn manifest(chunks: u32, chunk: u64, size: u64, seed: u64) -> Result<Manifest, Error> {
    let hashes: Arc<[ChunkHash]> = (0..chunks)
        .map(|i| *blake3::hash(&[seed.to_le_bytes(), u64::from(i).to_le_bytes()].concat()).as_bytes())
        .collect();
    let cs = ChunkSize::new(chunk).map_err(|e| Error::Scenario(e.to_string()))?;
    Manifest::from_hashes(cs, size, hashes).map_err(|e| Error::Scenario(e.to_string()))
}

impl<'a> Sim<'a> {
    pub(super) fn build(s: &'a Scenario, opt: Options, bound: f64) -> Result<Self, Error> {
        let size = s.image_bytes()?;
        let chunk = s.chunk_bytes()?;
        let chunks = u32::try_from(size.div_ceil(chunk)).map_err(|_| Error::Scenario("too many chunks".into()))?;
        let manifest = manifest(chunks, chunk, size, s.seed)?;
        let mut rng = Rng::new(s.seed);
        let masters: u32 = s.sites.iter().map(|x| x.masters).sum();
        let mut nodes = Vec::new();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        let mut master_index = 0;
        let sw = &s.swarm;
        // Every site reads the same federation file: the scenario's sites,
        // in order.
        let federation: Vec<u32> = if sw.site_shares { (0..s.sites.len() as u32).collect() } else { Vec::new() };
        for (site, x) in s.sites.iter().enumerate() {
            let site = site as u32;
            for _ in 0..x.masters {
                let stripe = (opt.master_policy && masters > 1).then_some(Stripe {
                    index: master_index,
                    count: masters,
                    grace: 2_000_000,
                });
                master_index += 1;
                let upload = UploadPolicy {
                    slots: sw.master_slots,
                    per_peer: sw.upload_per_peer,
                    max_queue: sw.master_queue,
                    master_copies: if opt.master_policy { sw.master_copies } else { u16::MAX },
                    stripe,
                    ..UploadPolicy::master()
                };
                nodes.push(new_node(s, &opt, site, Role::Master, upload, nodes.len()));
                up.push(s.link_rate(x.master_up_gbit));
                down.push(s.link_rate(x.master_up_gbit));
            }
            for h in 0..x.hosts {
                let role = if h < x.gateways { Role::Gateway } else { Role::Worker };
                let upload = UploadPolicy {
                    slots: sw.upload_slots,
                    per_peer: sw.upload_per_peer,
                    max_queue: sw.max_queue,
                    ..UploadPolicy::default()
                };
                let mut node = new_node(s, &opt, site, role, upload, nodes.len());
                if role == Role::Gateway && opt.locality {
                    node.swarm.fetch_stripe = Some(FetchStripe {
                        key: node.info.key,
                        federation: federation.clone(),
                        ..FetchStripe::default()
                    });
                }
                nodes.push(node);
                up.push(s.link_rate(x.host_up_gbit));
                down.push(s.link_rate(x.host_down_gbit));
            }
        }
        // Malicious hosts: among plain workers.
        let workers: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].info.role == Role::Worker).collect();
        let bad = (workers.len() as f64 * s.malicious.fraction).round() as usize;
        for &i in rng.sample(&workers, bad).iter() {
            nodes[i].malicious = true;
        }
        let left: Vec<usize> = workers.iter().copied().filter(|&i| !nodes[i].malicious).collect();
        let liars = (workers.len() as f64 * s.malicious.liars).round() as usize;
        for &i in rng.sample(&left, liars).iter() {
            nodes[i].malicious = true;
            nodes[i].liar = true;
        }
        // Churn: among honest plain workers.
        let honest: Vec<usize> = workers.iter().copied().filter(|&i| !nodes[i].malicious).collect();
        let leavers = rng.sample(&honest, (honest.len() as f64 * s.churn.leave_fraction).round() as usize);
        let cap = Capacities { up, down, wan_out: s.wan_rates(), wan_in: s.wan_rates() };
        let roles: Vec<Role> = nodes.iter().map(|n| n.info.role).collect();
        let plan = faults::Plan::draw(&s.faults, &roles, &mut rng);
        let mut flows = Flows::new(cap, opt.sharing);
        for (i, n) in nodes.iter().enumerate() {
            if n.info.role == Role::Master {
                flows.mark_seed(i as u32);
            }
        }
        let mut sim = Self {
            s,
            t: 0.0,
            manifest,
            flows,
            peering: peering::Peering::new(s, &opt),
            events: BinaryHeap::new(),
            seq: 0,
            lan: VecDeque::new(),
            wan: VecDeque::new(),
            late: BinaryHeap::new(),
            plan,
            violations: Vec::new(),
            trace: 0,
            lan_s: s.latency.lan_ms / 1000.0,
            wan_s: s.latency.wan_ms / 1000.0,
            dirty: Vec::new(),
            master_bytes: 0.0,
            wan_bytes: vec![vec![0.0; s.sites.len()]; s.sites.len()],
            wan_in_tenths: vec![Vec::new(); s.sites.len()],
            bans: 0,
            corrupt: BTreeMap::new(),
            processed: 0,
            honest_left: 0,
            delivered: Vec::new(),
            seeded: Vec::new(),
            bound,
            opt,
            presence: nodes.iter().map(|n| Presence { alive: false, epoch: 0, info: n.info }).collect(),
            nodes,
        };
        sim.honest_left = sim.nodes.iter().filter(|n| n.info.role != Role::Master && !n.malicious).count();
        sim.schedule_starts(&mut rng);
        for i in leavers {
            let at = sim.peering.start_of(i as u32) + rng.unit() * s.churn.leave_within_s;
            sim.nodes[i].down_for = s.churn.down_s;
            sim.schedule(at, Kind::Leave { node: i as u32 });
        }
        sim.schedule_faults(&mut rng);
        Ok(sim)
    }
}

fn new_node(s: &Scenario, opt: &Options, site: u32, role: Role, upload: UploadPolicy, index: usize) -> Node {
    let swarm = Config {
        site,
        role,
        pipeline: s.swarm.pipeline,
        cross_site_pipeline: s.swarm.cross_site_pipeline,
        max_inflight: s.swarm.max_inflight,
        random_first: s.swarm.random_first,
        picker: opt.picker,
        locality: opt.locality,
        request_timeout: s.swarm.request_timeout_ms * 1000,
        refusal_backoff: (s.swarm.refusal_backoff_ms * 1000.0) as u64,
        refusal_pause: (s.swarm.refusal_pause_ms * 1000.0) as u64,
        late_factor: s.swarm.late_factor,
        upload,
        seed: s.seed.wrapping_mul(0x100_0000_01b3).wrapping_add(index as u64),
        ..Config::default()
    };
    let info = PeerInfo { site, role, key: index as u64 };
    Node {
        info,
        malicious: false,
        liar: false,
        crashed: false,
        durable: Bitfield::new(0),
        committing: None,
        host: Host::new(),
        swarm,
        links: Vec::new(),
        waiting: Vec::new(),
        timer: None,
        completed: None,
        down_for: 0.0,
    }
}
