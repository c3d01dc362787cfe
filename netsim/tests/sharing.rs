//! The local sharing model against exact max-min fairness, on random flow
//! sets: local rates never exceed what a link can carry, and never exceed
//! the max-min rates (the local model is conservative).
#![allow(clippy::unwrap_used)]

use netsim::Rng;
use netsim::flows::{Capacities, Flows, Sharing};

fn caps(nodes: usize, rng: &mut Rng) -> Capacities {
    let c = |rng: &mut Rng| 1.0 + (rng.unit() * 9.0).floor();
    Capacities {
        up: (0..nodes).map(|_| c(rng)).collect(),
        down: (0..nodes).map(|_| c(rng)).collect(),
        wan_out: vec![f64::INFINITY, 3.0],
        wan_in: vec![f64::INFINITY, 2.0],
    }
}

#[test]
fn local_rates_are_feasible_and_never_above_max_min() {
    let mut rng = Rng::new(42);
    for round in 0..200 {
        let nodes = 2 + (rng.unit() * 8.0) as usize;
        let cap = caps(nodes, &mut rng);
        let mut local = Flows::new(cap.clone(), Sharing::Local);
        let mut exact = Flows::new(cap.clone(), Sharing::Exact);
        let n = 1 + (rng.unit() * 12.0) as usize;
        let mut ids = Vec::new();
        for _ in 0..n {
            let from = (rng.unit() * nodes as f64) as u32;
            let to = (from + 1 + (rng.unit() * (nodes - 1) as f64) as u32) % nodes as u32;
            let cross = (rng.unit() < 0.3).then_some((0, 1));
            ids.push((
                local.start(0.0, from, to, 0, 1 << 20, cross),
                exact.start(0.0, from, to, 0, 1 << 20, cross),
                from,
                to,
                cross,
            ));
        }
        let mut up = vec![0.0; nodes];
        let mut down = vec![0.0; nodes];
        let (mut wan_out, mut wan_in) = (0.0, 0.0);
        for &(l, e, from, to, cross) in &ids {
            let (rl, re) = (local.rate(l).unwrap(), exact.rate(e).unwrap());
            assert!(rl <= re + 1e-9, "round {round}: local {rl} above max-min {re}");
            up[from as usize] += re;
            down[to as usize] += re;
            if cross.is_some() {
                wan_out += re;
                wan_in += re;
            }
        }
        for i in 0..nodes {
            assert!(
                up[i] <= cap.up[i] + 1e-9 && down[i] <= cap.down[i] + 1e-9,
                "round {round}: max-min overcommits node {i}"
            );
        }
        assert!(wan_out <= 3.0 + 1e-9 && wan_in <= 2.0 + 1e-9);
    }
}
