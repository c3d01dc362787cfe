//! The lower bound, the baselines' and our completion statistics, and the
//! CSV and SVG reports.

use std::path::Path;

use plotters::prelude::*;
use proto::swarm::Role;

use crate::flows::{Capacities, Flows, Sharing};
use crate::scenario::Scenario;
use crate::sim::{NodeOutcome, Outcome};
use crate::{Error, GBIT};

/// The Kumar–Ross lower bound and its terms, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// `F / u_s`: the masters must send one copy.
    pub seed: f64,
    /// `F / d_min`: the slowest host must receive one copy.
    pub download: f64,
    /// `N·F / (u_s + Σ u_i)`: all uploads together must deliver N copies.
    pub aggregate: f64,
    /// `F / wan_in` for the slowest WAN into a site without masters (not part
    /// of Kumar–Ross; every such site must receive one copy over its WAN).
    pub wan: f64,
}

impl Bound {
    /// The bound for a scenario.
    pub fn of(s: &Scenario) -> Result<Self, Error> {
        let f = s.image_bytes()? as f64;
        let seeds: f64 = s.sites.iter().map(|x| f64::from(x.masters) * x.master_up_gbit * GBIT).sum();
        let hosts: f64 = s.sites.iter().map(|x| f64::from(x.hosts)).sum();
        let ups: f64 = s.sites.iter().map(|x| f64::from(x.hosts) * x.host_up_gbit * GBIT).sum();
        let d_min = s.sites.iter().map(|x| x.host_down_gbit * GBIT).fold(f64::INFINITY, f64::min);
        let wan = s
            .sites
            .iter()
            .filter(|x| x.masters == 0)
            .filter_map(|x| x.wan_gbit)
            .map(|g| f / (g * GBIT))
            .fold(0.0, f64::max);
        Ok(Self { seed: f / seeds, download: f / d_min, aggregate: hosts * f / (seeds + ups), wan })
    }

    /// The bound itself: the largest term.
    pub fn value(&self) -> f64 {
        self.seed.max(self.download).max(self.aggregate).max(self.wan)
    }
}

/// Completion statistics as ratios to the bound.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Honest receivers.
    pub nodes: usize,
    /// Of them, how many completed.
    pub completed: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Last.
    pub max: f64,
    /// Master upload / image size.
    pub master_egress: f64,
    /// Largest WAN ingress of a site / image size.
    pub wan_max: f64,
}

impl Summary {
    /// Summarises an outcome (incomplete hosts count as infinitely late).
    pub fn of(o: &Outcome, bound: f64, image: f64) -> Self {
        let t = ratios(o, bound, |_| true);
        Self {
            nodes: t.len(),
            completed: t.iter().filter(|x| x.is_finite()).count(),
            p50: rank(&t, 0.50),
            p99: rank(&t, 0.99),
            max: rank(&t, 1.0),
            master_egress: o.master_bytes / image,
            wan_max: (0..o.wan_bytes.len()).map(|s| o.wan_in(s)).fold(0.0, f64::max) / image,
        }
    }

    /// `p50=… p99=… max=… master_egress=… wan_max=…`
    pub fn fields(&self) -> String {
        format!(
            "p50={:.3} p99={:.3} max={:.3} master_egress={:.2} wan_max={:.2}",
            self.p50, self.p99, self.max, self.master_egress, self.wan_max
        )
    }
}

/// The honest receivers' completion times that `keep` selects, as sorted
/// ratios to the bound (an incomplete host counts as infinitely late).
fn ratios(o: &Outcome, bound: f64, keep: impl Fn(&NodeOutcome) -> bool) -> Vec<f64> {
    let mut t: Vec<f64> = o
        .nodes
        .iter()
        .filter(|n| n.honest_receiver() && keep(n))
        .map(|n| n.completed.map_or(f64::INFINITY, |c| c / bound))
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

/// The `q` quantile of sorted `t`, nearest rank (NaN when `t` is empty).
fn rank(t: &[f64], q: f64) -> f64 {
    t.get(((q * t.len() as f64).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN)
}

/// One line per site: its completion ratios and what crossed its WAN link,
/// in image copies (`in` broken down by the site it came from).
pub fn site_lines(s: &Scenario, o: &Outcome, bound: f64, image: f64) -> Vec<String> {
    s.sites
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let t = ratios(o, bound, |n| n.site == i as u32);
            let (p50, max) = (rank(&t, 0.5), rank(&t, 1.0));
            let from: Vec<String> = s
                .sites
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(j, y)| format!("{} {:.2}", y.name, o.wan_bytes[j][i] / image))
                .collect();
            let uses: Vec<String> =
                o.wan_in_use.get(i).into_iter().flatten().map(|u| format!("{:.0}%", 100.0 * u)).collect();
            format!(
                "site {}: p50={p50:.3} max={max:.3} wan_in={:.2} ({}) wan_out={:.2}; WAN in use per tenth: {}",
                x.name,
                o.wan_in(i) / image,
                from.join(", "),
                o.wan_out(i) / image,
                uses.join(" ")
            )
        })
        .collect()
}

/// The central-HTTP baseline: every host downloads the whole image from a
/// master (hosts spread evenly over the masters), in the same flow model.
pub fn central(s: &Scenario) -> Result<Outcome, Error> {
    let f = s.image_bytes()?;
    let masters: Vec<(u32, f64)> = s
        .sites
        .iter()
        .enumerate()
        .flat_map(|(i, x)| (0..x.masters).map(move |_| (i as u32, s.link_rate(x.master_up_gbit))))
        .collect();
    let hosts: Vec<(u32, f64, f64)> = s
        .sites
        .iter()
        .enumerate()
        .flat_map(|(i, x)| {
            (0..x.hosts).map(move |_| (i as u32, s.link_rate(x.host_up_gbit), s.link_rate(x.host_down_gbit)))
        })
        .collect();
    let mut up: Vec<f64> = masters.iter().map(|m| m.1).collect();
    let mut down: Vec<f64> = masters.iter().map(|m| m.1).collect();
    up.extend(hosts.iter().map(|h| h.1));
    down.extend(hosts.iter().map(|h| h.2));
    let cap = Capacities { up, down, wan_out: s.wan_rates(), wan_in: s.wan_rates() };
    let mut flows = Flows::new(cap, Sharing::Local);
    let m = masters.len() as u32;
    for (i, h) in hosts.iter().enumerate() {
        let from = i as u32 % m;
        let to = m + i as u32;
        let cross = (masters[from as usize].0 != h.0).then_some((masters[from as usize].0, h.0));
        flows.start(0.0, from, to, 0, f, cross);
    }
    let mut nodes: Vec<NodeOutcome> = masters
        .iter()
        .map(|m| NodeOutcome { site: m.0, role: Role::Master, malicious: false, completed: Some(0.0) })
        .chain(hosts.iter().map(|h| NodeOutcome { site: h.0, role: Role::Worker, malicious: false, completed: None }))
        .collect();
    let mut wan_bytes = vec![vec![0.0; s.sites.len()]; s.sites.len()];
    let (mut end, mut events) = (0.0, 0);
    while let Some((t, id)) = flows.next_due() {
        if let Some(fl) = flows.remove(t, id) {
            nodes[fl.to as usize].completed = Some(t);
            if let Some((from, into)) = fl.cross {
                wan_bytes[from as usize][into as usize] += fl.bytes as f64;
            }
            end = t;
            events += 1;
        }
    }
    Ok(Outcome {
        nodes,
        master_bytes: f as f64 * hosts.len() as f64,
        wan_bytes,
        wan_in_use: Vec::new(),
        bans: 0,
        max_corrupt_per_pair: 0,
        events,
        end,
        violations: Vec::new(),
        trace: 0,
        faults: Default::default(),
        // Not tracked for the baseline: its downlinks idle on the masters.
        download_use: Vec::new(),
        master_use: Vec::new(),
    })
}

/// Writes one line per node: `node,site,role,malicious,completed_s,ratio`.
pub fn write_csv(path: &Path, o: &Outcome, bound: f64) -> Result<(), Error> {
    let mut out = String::from("node,site,role,malicious,completed_s,ratio\n");
    for (i, n) in o.nodes.iter().enumerate() {
        let (c, r) =
            n.completed.map_or((String::new(), String::new()), |c| (format!("{c:.6}"), format!("{:.6}", c / bound)));
        out.push_str(&format!("{i},{},{:?},{},{c},{r}\n", n.site, n.role, n.malicious));
    }
    std::fs::write(path, out).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// Plots the distribution of completion ratios (one curve per run).
pub fn write_svg(path: &Path, title: &str, runs: &[(&str, &Outcome)], bound: f64) -> Result<(), Error> {
    let err = |e: String| Error::Io(format!("{}: {e}", path.display()));
    let curves: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(name, o)| {
            let mut t: Vec<f64> =
                o.nodes.iter().filter(|n| n.honest_receiver()).filter_map(|n| n.completed).map(|c| c / bound).collect();
            t.sort_by(f64::total_cmp);
            let total = o.nodes.iter().filter(|n| n.honest_receiver()).count().max(1) as f64;
            (*name, t.iter().enumerate().map(|(i, &x)| (x, (i + 1) as f64 / total)).collect())
        })
        .collect();
    let x_max = curves.iter().flat_map(|(_, c)| c.last().map(|p| p.0)).fold(1.0, f64::max) * 1.05;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..1.0)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("completion time / Kumar-Ross bound")
        .y_desc("fraction of hosts complete")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let colours = [RED, BLUE, BLACK, GREEN];
    for (i, (name, pts)) in curves.into_iter().enumerate() {
        let c = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}
