//! Drives the tracker's registry with arbitrary announcements, forgets and
//! clock steps, under small limits so that every bound is reached. Checked
//! after every step:
//! * it holds no more than its limits, and `len` is the sum of the counts;
//! * an answer has at most `want` peers, all distinct, never the announcer,
//!   each announced for that image and not expired or forgotten since;
//! * a worker is only handed peers of its own site, and a gateway or master
//!   only other sites' gateways and masters.
#![no_main]

use std::collections::{HashMap, HashSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proto::swarm::Role;
use proto::tracker::{Limits, Registry};
use proto::wire::{Announce, Limit, decode};
use uuid::Uuid;

const TTL: u64 = 30;
const LIMITS: Limits = Limits { images: 3, peers_per_image: 6, entries: 10 };

#[derive(Debug, Arbitrary)]
enum Step {
    Announce { after: u8, peer: u8, image: u8, site: u8, role: u8, complete: bool, want: u8 },
    /// An announcement as the tracker decodes it off the wire.
    Raw { after: u8, peer: u8, bytes: Vec<u8> },
    Forget(u8),
}

fuzz_target!(|steps: Vec<Step>| {
    let mut r = Registry::with_limits(TTL, LIMITS);
    let mut now = 0u64;
    // What each live announcement said: (image, peer) -> (site, role, expiry).
    let mut said: HashMap<(Uuid, Vec<u8>), (String, Role, u64)> = HashMap::new();
    for step in steps.into_iter().take(1024) {
        let (after, peer, a) = match step {
            Step::Forget(p) => {
                r.forget(&[p % 16]);
                said.retain(|(_, q), _| q != &[p % 16]);
                continue;
            }
            Step::Announce { after, peer, image, site, role, complete, want } => {
                let role = [Role::Worker, Role::Gateway, Role::Master][usize::from(role % 3)];
                let image = Uuid::from_u128(u128::from(image % 5));
                let site = ["a", "b", "c"][usize::from(site % 3)].to_owned();
                (after, peer, Announce { image, site, role, complete, addrs: vec![], want: u16::from(want % 12) })
            }
            Step::Raw { after, peer, bytes } => match decode::<Announce>(&bytes, Limit::Control) {
                Ok(a) => (after, peer, a),
                Err(_) => continue,
            },
        };
        now += u64::from(after % 8);
        let me = vec![peer % 16];
        let answer = r.announce(now, me.clone(), a.clone());
        said.insert((a.image, me.clone()), (a.site.clone(), a.role, now + TTL));

        assert!(answer.peers.len() <= usize::from(a.want));
        let mut distinct = HashSet::new();
        for h in &answer.peers {
            assert!(distinct.insert(h.peer.clone()), "a peer twice in one answer");
            assert_ne!(h.peer, me, "the announcer handed itself");
            let (site, role, expires) = said.get(&(a.image, h.peer.clone())).expect("handed a peer never announced");
            assert!(*expires > now, "handed an expired peer");
            assert_eq!((&h.site, h.role), (site, *role), "handed what the peer did not say last");
            if h.site != a.site {
                assert!(a.role.crosses_sites() && h.role.crosses_sites(), "crossed sites: {a:?} got {h:?}");
            }
        }
        let counts = r.counts(now);
        assert!(counts.len() <= LIMITS.images);
        assert!(counts.iter().all(|(_, n)| *n <= LIMITS.peers_per_image && *n > 0));
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<usize>(), r.len());
        assert!(r.len() <= LIMITS.entries);
    }
});
