//! The sharing models on random flow sets: neither ever asks a link to carry
//! more than its capacity, and the local model delivers most of what exact
//! max-min fairness does.
#![allow(clippy::unwrap_used)]

use netsim::Rng;
use netsim::flows::{Capacities, FlowId, Flows, Sharing};

const WAN_OUT: f64 = 3.0;
const WAN_IN: f64 = 2.0;

fn caps(nodes: usize, rng: &mut Rng) -> Capacities {
    let c = |rng: &mut Rng| 1.0 + (rng.unit() * 9.0).floor();
    Capacities {
        up: (0..nodes).map(|_| c(rng)).collect(),
        down: (0..nodes).map(|_| c(rng)).collect(),
        wan_out: vec![f64::INFINITY, WAN_OUT],
        wan_in: vec![f64::INFINITY, WAN_IN],
    }
}

struct Spec {
    from: u32,
    to: u32,
    cross: Option<(u32, u32)>,
}

/// Checks that `rates` respect every capacity; returns their sum.
fn feasible(round: usize, model: &str, cap: &Capacities, specs: &[Spec], rates: &[f64]) -> f64 {
    let mut up = vec![0.0; cap.up.len()];
    let mut down = vec![0.0; cap.down.len()];
    let mut wan = 0.0;
    for (s, &r) in specs.iter().zip(rates) {
        up[s.from as usize] += r;
        down[s.to as usize] += r;
        if s.cross.is_some() {
            wan += r;
        }
    }
    for i in 0..up.len() {
        assert!(up[i] <= cap.up[i] + 1e-9, "round {round}: {model} overcommits the uplink of {i}");
        assert!(down[i] <= cap.down[i] + 1e-9, "round {round}: {model} overcommits the downlink of {i}");
    }
    assert!(wan <= WAN_OUT.min(WAN_IN) + 1e-9, "round {round}: {model} overcommits the WAN");
    rates.iter().sum()
}

#[test]
fn both_models_are_feasible_and_local_carries_most_of_max_min() {
    let mut rng = Rng::new(42);
    let (mut local_sum, mut exact_sum) = (0.0, 0.0);
    for round in 0..300 {
        let nodes = 2 + (rng.unit() * 8.0) as usize;
        let cap = caps(nodes, &mut rng);
        let mut local = Flows::new(cap.clone(), Sharing::Local);
        let mut exact = Flows::new(cap.clone(), Sharing::Exact);
        let mut specs = Vec::new();
        let mut ids: Vec<(FlowId, FlowId)> = Vec::new();
        for _ in 0..1 + (rng.unit() * 12.0) as usize {
            let from = (rng.unit() * nodes as f64) as u32;
            let to = (from + 1 + (rng.unit() * (nodes - 1) as f64) as u32) % nodes as u32;
            let cross = (rng.unit() < 0.3).then_some((1, 1));
            ids.push((local.start(0.0, from, to, 0, 1 << 20, cross), exact.start(0.0, from, to, 0, 1 << 20, cross)));
            specs.push(Spec { from, to, cross });
        }
        // Remove a few, so that allocations are recomputed after departures too.
        for _ in 0..(rng.unit() * 3.0) as usize {
            if ids.len() > 1 {
                let k = (rng.unit() * ids.len() as f64) as usize;
                let (l, e) = ids.remove(k);
                specs.remove(k);
                local.remove(0.0, l);
                exact.remove(0.0, e);
            }
        }
        let lr: Vec<f64> = ids.iter().map(|&(l, _)| local.rate(l).unwrap()).collect();
        let er: Vec<f64> = ids.iter().map(|&(_, e)| exact.rate(e).unwrap()).collect();
        local_sum += feasible(round, "local", &cap, &specs, &lr);
        exact_sum += feasible(round, "max-min", &cap, &specs, &er);
    }
    let ratio = local_sum / exact_sum;
    assert!(ratio >= 0.90, "local carries {ratio:.3} of max-min's total");
}

/// The completion queue keeps its order while it grows past its first size,
/// and across removals that free slots for reuse.
#[test]
fn completions_come_in_time_order_however_many_flows_run() {
    const N: u32 = 3000;
    // Node i sends to node N + i only, so every flow has a link to itself.
    let cap = Capacities {
        up: vec![1.0; 2 * N as usize],
        down: vec![1.0; 2 * N as usize],
        wan_out: vec![f64::INFINITY],
        wan_in: vec![f64::INFINITY],
    };
    let mut flows = Flows::new(cap, Sharing::Local);
    let mut rng = Rng::new(7);
    let bytes: Vec<u64> = (0..N).map(|_| 1 + (rng.unit() * 1e6) as u64).collect();
    for i in 0..N {
        flows.start(0.0, i, N + i, i, bytes[i as usize], None);
    }
    let mut last = 0.0;
    let mut done = 0;
    while let Some((t, id)) = flows.next_due() {
        assert!(t >= last, "flow {id} due at {t} after one due at {last}");
        let f = flows.remove(t, id).unwrap();
        assert!((t - bytes[f.chunk as usize] as f64).abs() < 1e-6, "flow {id} ended at {t}");
        last = t;
        done += 1;
        // Reuse the freed slot now and then: a short flow on the same pair.
        if done % 100 == 0 {
            flows.start(t, f.from, f.to, f.chunk, 0, None);
        }
    }
    assert_eq!(done, N + N / 100);
}

/// A flow with a mark is due when that many bytes are left, then at its
/// end; a later change of rate moves both, and a mark at or beyond what is
/// left is due at once.
#[test]
fn a_marked_flow_is_due_at_its_mark_then_at_its_end() {
    let cap =
        Capacities { up: vec![1.0; 3], down: vec![1.0; 3], wan_out: vec![f64::INFINITY], wan_in: vec![f64::INFINITY] };
    let mut flows = Flows::new(cap, Sharing::Local);
    let a = flows.start(0.0, 0, 1, 0, 10, None);
    flows.set_mark(0.0, a, 4);
    assert_eq!(flows.next_due(), Some((6.0, a)));
    assert!(flows.get(a).unwrap().before_mark());
    // A second flow from the same sender halves the rate from t = 2: the
    // mark's 4 bytes to go take 8 s more at 0.5.
    let b = flows.start(2.0, 0, 2, 1, 100, None);
    assert_eq!(flows.next_due(), Some((10.0, a)));
    assert!(flows.pass_mark(10.0, a));
    assert!(!flows.get(a).unwrap().before_mark());
    assert_eq!(flows.next_due(), Some((18.0, a)));
    assert!(!flows.pass_mark(18.0, a), "due at its end, not at a mark");
    flows.remove(18.0, a).unwrap();
    flows.set_mark(18.0, b, 1_000);
    assert_eq!(flows.next_due(), Some((18.0, b)));
    assert!(flows.pass_mark(18.0, b));
    assert!(flows.between(0, 2) && !flows.between(0, 1) && !flows.between(2, 0));
}

/// What flows into a site from others is summed per site as rates change,
/// for the WAN use reported per tenth of the bound.
#[test]
fn wan_in_rates_follow_the_flows_into_each_site() {
    let cap = Capacities { up: vec![4.0; 3], down: vec![4.0; 3], wan_out: vec![10.0; 2], wan_in: vec![3.0, 10.0] };
    let mut flows = Flows::new(cap, Sharing::Local);
    let a = flows.start(0.0, 0, 1, 0, 100, Some((1, 0)));
    assert_eq!(flows.wan_in_rates(), [3.0, 0.0]);
    let b = flows.start(0.0, 2, 1, 1, 100, None);
    let local = flows.rate(b).unwrap();
    assert_eq!(flows.wan_in_rates(), [flows.rate(a).unwrap(), 0.0]);
    assert!(flows.rate(a).unwrap() + local <= 4.0 + 1e-9);
    flows.remove(1.0, a).unwrap();
    assert_eq!(flows.wan_in_rates(), [0.0, 0.0]);
}
