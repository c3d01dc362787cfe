//! Seeded faults (netsim/scenarios/faults.toml) run through the node's own
//! transfer machine: CI runs a few seeds; `netsim sweep` runs many.
#![allow(clippy::unwrap_used)]

use netsim::report::Bound;
use netsim::scenario::Scenario;
use netsim::sim::{Options, Outcome, simulate};

fn faults(seed: u64) -> Scenario {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/faults.toml");
    let mut s = Scenario::load(&path).unwrap();
    s.seed = seed;
    s
}

fn run(s: &Scenario) -> Outcome {
    simulate(s, &Options::default(), Bound::of(s).unwrap().value()).unwrap()
}

#[test]
fn under_seeded_faults_every_honest_host_completes_and_no_invariant_fails() {
    let mut failed = Vec::new();
    for seed in 1..=6 {
        let o = run(&faults(seed));
        if let Some(why) = o.failure() {
            eprintln!("seed {seed}: {why}");
            failed.push(seed);
        }
        let f = o.faults;
        assert!(f.blocked > 0 && f.lost > 0 && f.delayed > 0 && f.crashes > 0, "seed {seed}: a fault never bit: {f:?}");
        assert!(o.bans > 0, "seed {seed}: the corrupt peers were never banned");
    }
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

#[test]
fn the_same_seed_gives_the_same_trace_under_faults() {
    let a = run(&faults(3));
    let b = run(&faults(3));
    assert_eq!((a.trace, a.events, a.faults), (b.trace, b.events, b.faults));
    assert_ne!(a.trace, run(&faults(4)).trace);
}

#[test]
fn a_crash_loses_what_was_not_committed_and_the_host_still_completes() {
    let mut s = faults(2);
    s.faults.partitions.clear();
    s.faults.clog = None;
    s.faults.loss = 0.0;
    s.faults.crash.as_mut().unwrap().fraction = 0.5;
    // Slow commits: a crash always finds some chunks written and not durable.
    s.faults.commit_ms = 300.0;
    let o = run(&s);
    assert_eq!(o.failure(), None);
    assert!(o.faults.crashes >= 30, "{:?}", o.faults);
}
