//! Small scenarios, run by CI: determinism, completion under churn and
//! malicious peers, locality across sites, and the ordering against the
//! baselines. The 10,000-host targets are benchmarks (docs/BENCHMARKS.md).
#![allow(clippy::unwrap_used)]

use netsim::report::{self, Bound, Summary};
use netsim::scenario::Scenario;
use netsim::sim::{Options, Outcome, simulate};
use proto::swarm::PickerMode;

fn scenario(extra: &str, hosts: u32) -> Scenario {
    Scenario::parse(&format!(
        r#"
name = "t"
seed = 5
image_size = "128MiB"
chunk_size = "2MiB"
[[site]]
name = "a"
hosts = {hosts}
host_up_gbit = 10.0
host_down_gbit = 10.0
masters = 2
master_up_gbit = 25.0
{extra}
"#
    ))
    .unwrap()
}

/// Where the shipped scenario files are.
fn shipped() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// A scenario file from `netsim/scenarios`, run with the defaults.
fn run_shipped(name: &str) -> Summary {
    let (_, sum) = run(&Scenario::load(&shipped().join(name)).unwrap(), &Options::default());
    assert_eq!(sum.completed, sum.nodes, "{name}");
    sum
}

fn run(s: &Scenario, opt: &Options) -> (Outcome, Summary) {
    let bound = Bound::of(s).unwrap().value();
    let o = simulate(s, opt, bound).unwrap();
    let sum = Summary::of(&o, bound, s.image_bytes().unwrap() as f64);
    (o, sum)
}

#[test]
fn the_ci_scenario_file_parses_and_completes() {
    let sum = run_shipped("small-200.toml");
    assert!(sum.p50 >= 1.0, "faster than the lower bound: {sum:?}");
    assert!(sum.max < 3.0, "{sum:?}");
    assert!(sum.master_egress < 1.5, "{sum:?}");
}

#[test]
fn every_shipped_scenario_file_parses() {
    let dir = shipped();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(Bound::of(&s).unwrap().value() > 0.0, "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 5, "only {n} scenario files found in {}", dir.display());
}

#[test]
fn the_testbed_shape_is_where_the_node_is_measured() {
    // docs/BENCHMARKS.md compares the real testbed with this run.
    let sum = run_shipped("testbed-8.toml");
    assert!(sum.max < 1.3, "{sum:?}");
    assert!(sum.master_egress < 1.1, "{sum:?}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let s = scenario("", 60);
    let (a, _) = run(&s, &Options::default());
    let (b, _) = run(&s, &Options::default());
    let times = |o: &Outcome| o.nodes.iter().map(|n| n.completed.map(f64::to_bits)).collect::<Vec<_>>();
    assert_eq!(times(&a), times(&b));
    assert_eq!(a.events, b.events);
    let mut other = s.clone();
    other.seed = 6;
    assert_ne!(times(&a), times(&run(&other, &Options::default()).0));
}

#[test]
fn churn_and_malicious_peers_every_honest_host_completes_and_bans_at_first_bad_chunk() {
    let s = scenario(
        "[churn]\nleave_fraction = 0.1\nleave_within_s = 0.05\ndown_s = 0.1\n[malicious]\nfraction = 0.05\n",
        120,
    );
    let (o, sum) = run(&s, &Options::default());
    assert_eq!(sum.completed, sum.nodes, "{sum:?}");
    assert!(o.nodes.iter().filter(|n| n.malicious).count() >= 5);
    assert!(o.bans > 0);
    assert_eq!(o.max_corrupt_per_pair, 1, "a bad peer delivered more than one bad chunk to one host");
}

#[test]
fn across_sites_only_gateways_fetch_and_one_copy_leaves_the_masters_site() {
    let site = |name: &str, masters: u32| {
        format!(
            "[[site]]\nname = \"{name}\"\nhosts = 80\nhost_up_gbit = 10.0\nhost_down_gbit = 10.0\nmasters = {masters}\nmaster_up_gbit = 25.0\ngateways = 2\nwan_gbit = 10.0\n"
        )
    };
    // 1 GiB: at 128 MiB a gateway's first manifest request across the WAN
    // (a 40 ms round trip) is 40 % of the bound, and what gateways ask for
    // before they know their partners decides most of the run.
    let s = Scenario::parse(&format!(
        "name = \"fed\"\nseed = 3\nimage_size = \"1GiB\"\nchunk_size = \"4MiB\"\n{}{}{}",
        site("home", 2),
        site("east", 0),
        site("west", 0)
    ))
    .unwrap();
    let (o, ours) = run(&s, &Options::default());
    assert_eq!(ours.completed, ours.nodes);
    // The sites without masters split what crosses from the masters' site
    // and trade the rest: its WAN uplink carries one copy, not one per site.
    let image = s.image_bytes().unwrap() as f64;
    let copies = |from: usize, to: usize| o.wan_bytes[from][to] / image;
    assert!(o.wan_out(0) / image < 1.1, "{:?}", o.wan_bytes);
    for (a, b) in [(1, 2), (2, 1)] {
        assert!(copies(a, b) > 0.3, "{:?}", o.wan_bytes);
    }
    let random = Options { picker: PickerMode::Random, locality: false, master_policy: false, ..Options::default() };
    let (_, theirs) = run(&s, &random);
    // Without locality every host fetches across sites; with it only the
    // gateways do, so far less enters each site over its WAN.
    assert!(ours.wan_max < theirs.wan_max / 2.0, "ours {ours:?} vs random {theirs:?}");
}

#[test]
fn the_swarm_beats_central_http_and_spares_the_masters() {
    let s = scenario("", 100);
    let bound = Bound::of(&s).unwrap().value();
    let (_, ours) = run(&s, &Options::default());
    let central = Summary::of(&report::central(&s).unwrap(), bound, s.image_bytes().unwrap() as f64);
    assert!(ours.p99 * 3.0 < central.p99, "ours {ours:?} vs central {central:?}");
    assert!(ours.master_egress < 1.5 && central.master_egress > 99.0);
}

#[test]
fn links_carry_chunks_at_their_payload_share_against_the_same_bound() {
    let mut s = scenario("", 20);
    let bound = Bound::of(&s).unwrap().value();
    let central = |s: &Scenario| Summary::of(&report::central(s).unwrap(), bound, s.image_bytes().unwrap() as f64);
    let whole = central(&s);
    s.payload_share = 0.5;
    assert_eq!(Bound::of(&s).unwrap().value(), bound, "the bound is of the links' whole rates");
    let half = central(&s);
    assert!((half.max / whole.max - 2.0).abs() < 1e-6, "half the rate, twice the time: {whole:?} {half:?}");
    let (_, ours) = run(&s, &Options::default());
    assert!(ours.max > 2.0, "{ours:?}");
    for share in ["0.0", "1.5"] {
        let text = format!(
            "name = \"t\"\nimage_size = \"1MiB\"\nchunk_size = \"256KiB\"\npayload_share = {share}\n[[site]]\nname = \"a\"\nhosts = 2\nhost_up_gbit = 1.0\nhost_down_gbit = 1.0\nmasters = 1\nmaster_up_gbit = 1.0\n"
        );
        assert!(Scenario::parse(&text).is_err(), "payload_share = {share} is refused");
    }
}
