//! Flows: chunk transfers sharing upload, download and WAN capacity.
//!
//! # Sharing models
//! * [`Sharing::Local`] (the default): every node water-fills its own uplink
//!   over its uploads and its downlink over its downloads. A flow's demand
//!   at one end is the water level at the other end as of that end's last
//!   fill (its equal share there, or more when other flows there are held
//!   back elsewhere); its rate is the smaller of its two allocations,
//!   and for a cross-site flow also at most its equal share of each site's
//!   WAN link. A node's allocations are recomputed together whenever its own
//!   set of flows changes, so they never add up to more than its capacity:
//!   the model is always feasible. An event costs O(k log k) for the k flows
//!   at the two nodes concerned. Against exact max-min it hands out less
//!   where a chain of bottlenecks would let capacity flow further (one hop of
//!   redistribution instead of a global fixed point).
//! * [`Sharing::Exact`]: max-min fair rates by progressive filling over every
//!   link, recomputed for all flows on every change. Exact and O(links ×
//!   flows) per event: for checking the local model on small scenarios
//!   (`tests/sharing.rs`).
//!
//! A flow may carry a mark: a number of bytes still to go at which it is
//! due once before it completes ([`Flows::set_mark`], [`Flows::pass_mark`]),
//! as the sender's transport reports an upload sent while its last bytes
//! are still on their way.
//!
//! A flow's next due time is predicted from its rate; when rates change, the
//! bytes sent so far are settled and the prediction is moved in place in an
//! indexed priority queue, so the queue holds one entry per live flow (a
//! change of rate at a busy node re-predicts every flow there, and stale
//! entries left behind would outnumber the live ones many times over).

use orx_priority_queue::{DaryHeapOfIndices, PriorityQueue, PriorityQueueDecKey};

use crate::At;

/// How concurrent flows share capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Equal share at each flow's own bottleneck, updated locally.
    #[default]
    Local,
    /// Max-min fair, recomputed globally.
    Exact,
}

/// A flow's handle.
pub type FlowId = u32;

/// One transfer.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Sender node.
    pub from: u32,
    /// Receiver node.
    pub to: u32,
    /// What it carries (chunk index, or 0 for whole-image flows).
    pub chunk: u32,
    /// Total bytes.
    pub bytes: u64,
    /// `(sender site, receiver site)` when it crosses sites.
    pub cross: Option<(u32, u32)>,
    left: f64,
    /// While positive: the flow is due when this many bytes are left.
    mark: f64,
    rate: f64,
    last: f64,
    /// The sender's water-filling allocation to this flow.
    up_alloc: f64,
    /// The receiver's water-filling allocation to this flow.
    down_alloc: f64,
}

impl Flow {
    /// Bytes delivered so far, at time `now`.
    pub fn sent(&self, now: f64) -> f64 {
        self.bytes as f64 - self.left_at(now)
    }

    /// Bytes still to go at `now`.
    fn left_at(&self, now: f64) -> f64 {
        (self.left - self.rate * (now - self.last)).max(0.0)
    }

    /// Counts what the flow sent until `now`.
    fn settle(&mut self, now: f64) {
        self.left = self.left_at(now);
        self.last = now;
    }

    /// Whether the flow's mark is still ahead of it.
    pub fn before_mark(&self) -> bool {
        self.mark > 0.0
    }

    /// When the flow is next due, counted from `now`, when its bytes to go
    /// were last settled: at its mark while one is ahead, else at its end.
    fn due_at(&self, now: f64) -> f64 {
        if self.rate > 0.0 { now + (self.left - self.mark).max(0.0) / self.rate } else { f64::INFINITY }
    }
}

/// Capacities in bytes per second.
#[derive(Debug, Clone)]
pub struct Capacities {
    /// Per node.
    pub up: Vec<f64>,
    /// Per node.
    pub down: Vec<f64>,
    /// Per site, leaving the site (infinite: no WAN limit).
    pub wan_out: Vec<f64>,
    /// Per site, entering the site.
    pub wan_in: Vec<f64>,
}

/// All flows in progress.
#[derive(Debug)]
pub struct Flows {
    sharing: Sharing,
    cap: Capacities,
    slots: Vec<Option<Flow>>,
    free: Vec<FlowId>,
    /// The sum of the rates in `slots`, kept as rates change.
    total: f64,
    /// Which senders [`Flows::seed_rate`] counts (the masters).
    seeds: Vec<bool>,
    /// The sum of the rates of flows from those senders.
    seed_total: f64,
    /// Per site, the sum of the rates of flows into it from other sites.
    wan_in_total: Vec<f64>,
    /// Per node, the water level of its uplink and downlink at their last
    /// fill (the capacity while idle).
    up_level: Vec<f64>,
    down_level: Vec<f64>,
    /// Predicted completion per live flow with a rate; ties go to the lower
    /// id. Indexed by flow id (a slot), so finding a flow is an array read.
    due: DaryHeapOfIndices<FlowId, (At, FlowId), 4>,
    up: Vec<Vec<FlowId>>,
    down: Vec<Vec<FlowId>>,
    wan_out: Vec<Vec<FlowId>>,
    wan_in: Vec<Vec<FlowId>>,
    /// Buffers reused by every re-rating, which runs on every flow event.
    scratch_touched: Vec<FlowId>,
    scratch_demands: Vec<(f64, FlowId)>,
}

impl Flows {
    /// No flows yet.
    pub fn new(cap: Capacities, sharing: Sharing) -> Self {
        let (n, s) = (cap.up.len(), cap.wan_in.len());
        let (up_level, down_level) = (cap.up.clone(), cap.down.clone());
        Self {
            sharing,
            cap,
            slots: Vec::new(),
            free: Vec::new(),
            total: 0.0,
            seeds: vec![false; n],
            seed_total: 0.0,
            wan_in_total: vec![0.0; s],
            up_level,
            down_level,
            due: DaryHeapOfIndices::with_index_bound(1024),
            up: vec![Vec::new(); n],
            down: vec![Vec::new(); n],
            wan_out: vec![Vec::new(); s],
            wan_in: vec![Vec::new(); s],
            scratch_touched: Vec::new(),
            scratch_demands: Vec::new(),
        }
    }

    /// Starts a flow at `now`.
    pub fn start(&mut self, now: f64, from: u32, to: u32, chunk: u32, bytes: u64, cross: Option<(u32, u32)>) -> FlowId {
        let flow = Flow {
            from,
            to,
            chunk,
            bytes,
            cross,
            left: bytes as f64,
            mark: 0.0,
            rate: 0.0,
            last: now,
            up_alloc: 0.0,
            down_alloc: 0.0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(flow);
                id
            }
            None => {
                self.slots.push(Some(flow));
                if self.slots.len() > self.due.index_bound() {
                    let due = std::mem::replace(&mut self.due, DaryHeapOfIndices::with_index_bound(0));
                    self.due = DaryHeapOfIndices::from_iter_with_index_bound(2 * self.slots.len(), due.iter().cloned());
                }
                (self.slots.len() - 1) as FlowId
            }
        };
        self.up[from as usize].push(id);
        self.down[to as usize].push(id);
        if let Some((o, i)) = cross {
            self.wan_out[o as usize].push(id);
            self.wan_in[i as usize].push(id);
        }
        self.rerate(now, id);
        id
    }

    /// Ends a flow (completed or aborted) and re-rates its neighbours.
    pub fn remove(&mut self, now: f64, id: FlowId) -> Option<Flow> {
        let flow = self.slots.get_mut(id as usize)?.take()?;
        self.free.push(id);
        if self.due.contains(&id) {
            self.due.remove(&id);
        }
        self.total -= flow.rate;
        if self.seeds[flow.from as usize] {
            self.seed_total -= flow.rate;
        }
        if let Some((_, into)) = flow.cross {
            self.wan_in_total[into as usize] -= flow.rate;
        }
        let drop_id = |v: &mut Vec<FlowId>| {
            if let Some(p) = v.iter().position(|&x| x == id) {
                v.swap_remove(p);
            }
        };
        drop_id(&mut self.up[flow.from as usize]);
        drop_id(&mut self.down[flow.to as usize]);
        if let Some((o, i)) = flow.cross {
            drop_id(&mut self.wan_out[o as usize]);
            drop_id(&mut self.wan_in[i as usize]);
        }
        self.rerate_around(now, &flow);
        Some(flow)
    }

    /// Makes `id` due once more, when `left` bytes of it are still to go
    /// (at once if fewer are), before it completes.
    pub fn set_mark(&mut self, now: f64, id: FlowId, left: u64) {
        if let Some(f) = self.slots.get_mut(id as usize).and_then(Option::as_mut) {
            f.mark = left as f64;
            let rate = f.rate;
            self.repredict(now, id, rate);
        }
    }

    /// If `id` is due at its mark: clears the mark, predicts its completion
    /// and returns `true`; `false` if it is due at its end.
    pub fn pass_mark(&mut self, now: f64, id: FlowId) -> bool {
        let Some(f) = self.slots.get_mut(id as usize).and_then(Option::as_mut) else {
            return false;
        };
        if !f.before_mark() {
            return false;
        }
        f.mark = 0.0;
        let rate = f.rate;
        self.repredict(now, id, rate);
        true
    }

    /// The earliest predicted completion or mark.
    pub fn next_due(&self) -> Option<(f64, FlowId)> {
        self.due.peek().map(|&(id, (At(t), _))| (t, id))
    }

    /// A flow in progress.
    pub fn get(&self, id: FlowId) -> Option<&Flow> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    /// Whether a flow from `from` to `to` is in progress.
    pub fn between(&self, from: u32, to: u32) -> bool {
        self.up[from as usize].iter().any(|&id| self.get(id).is_some_and(|f| f.to == to))
    }

    /// Every flow into or out of `node`.
    pub fn of_node(&self, node: u32) -> Vec<FlowId> {
        let mut v = self.up[node as usize].clone();
        v.extend_from_slice(&self.down[node as usize]);
        v
    }

    /// The current rate of a flow, bytes per second.
    pub fn rate(&self, id: FlowId) -> Option<f64> {
        self.get(id).map(|f| f.rate)
    }

    /// The sum of every flow's rate, bytes per second.
    pub fn total_rate(&self) -> f64 {
        self.total
    }

    /// Counts `node`'s uploads in [`Flows::seed_rate`].
    pub fn mark_seed(&mut self, node: u32) {
        self.seeds[node as usize] = true;
    }

    /// The sum of the rates of flows from nodes marked with
    /// [`Flows::mark_seed`], bytes per second.
    pub fn seed_rate(&self) -> f64 {
        self.seed_total
    }

    /// Per site, the sum of the rates of flows into it from other sites,
    /// bytes per second.
    pub fn wan_in_rates(&self) -> &[f64] {
        &self.wan_in_total
    }

    /// A node's upload capacity, bytes per second.
    pub fn capacity_up(&self, node: u32) -> f64 {
        self.cap.up[node as usize]
    }

    /// A node's download capacity, bytes per second.
    pub fn capacity_down(&self, node: u32) -> f64 {
        self.cap.down[node as usize]
    }

    /// The WAN capacity into a site, bytes per second.
    pub fn capacity_wan_in(&self, site: u32) -> f64 {
        self.cap.wan_in[site as usize]
    }

    /// Flows in progress.
    pub fn active(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn rerate(&mut self, now: f64, id: FlowId) {
        let Some(f) = self.get(id).cloned() else {
            return;
        };
        self.rerate_around(now, &f);
    }

    fn rerate_around(&mut self, now: f64, f: &Flow) {
        if self.sharing == Sharing::Exact {
            self.rerate_all_exact(now);
            return;
        }
        self.fill(f.from, true);
        self.fill(f.to, false);
        let mut touched = std::mem::take(&mut self.scratch_touched);
        touched.clear();
        touched.extend_from_slice(&self.up[f.from as usize]);
        touched.extend_from_slice(&self.down[f.to as usize]);
        if let Some((o, i)) = f.cross {
            touched.extend_from_slice(&self.wan_out[o as usize]);
            touched.extend_from_slice(&self.wan_in[i as usize]);
        }
        touched.sort_unstable();
        touched.dedup();
        for &id in &touched {
            let rate = self.local_rate(id);
            self.set_rate(now, id, rate);
        }
        self.scratch_touched = touched;
    }

    fn share(cap: f64, n: usize) -> f64 {
        if n == 0 { cap } else { cap / n as f64 }
    }

    /// Water-fills `node`'s uplink (`up`) or downlink over its flows, each
    /// demanding the water level at its other end (what a flow could get
    /// there: more than the equal share when other flows there are held back
    /// elsewhere), then records this link's own level.
    fn fill(&mut self, node: u32, up: bool) {
        let ids = if up { &self.up[node as usize] } else { &self.down[node as usize] };
        let cap = if up { self.cap.up[node as usize] } else { self.cap.down[node as usize] };
        let mut demands = std::mem::take(&mut self.scratch_demands);
        demands.clear();
        demands.extend(ids.iter().filter_map(|&id| {
            let f = self.get(id)?;
            let other = if up { self.down_level[f.to as usize] } else { self.up_level[f.from as usize] };
            Some((other, id))
        }));
        demands.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut left = cap;
        let n = demands.len();
        let mut largest = 0.0;
        for (i, &(demand, id)) in demands.iter().enumerate() {
            let alloc = demand.min(left / (n - i) as f64);
            left -= alloc;
            largest = alloc;
            if let Some(f) = self.slots.get_mut(id as usize).and_then(Option::as_mut) {
                if up {
                    f.up_alloc = alloc;
                } else {
                    f.down_alloc = alloc;
                }
            }
        }
        self.scratch_demands = demands;
        // The most one more flow's worth could reach here: the fair level
        // when it binds, else the largest allocation plus what is spare.
        let level = largest + left.max(0.0);
        if up {
            self.up_level[node as usize] = level;
        } else {
            self.down_level[node as usize] = level;
        }
    }

    fn local_rate(&self, id: FlowId) -> f64 {
        let Some(f) = self.get(id) else {
            return 0.0;
        };
        let mut r = f.up_alloc.min(f.down_alloc);
        if let Some((o, i)) = f.cross {
            r = r
                .min(Self::share(self.cap.wan_out[o as usize], self.wan_out[o as usize].len()))
                .min(Self::share(self.cap.wan_in[i as usize], self.wan_in[i as usize].len()));
        }
        r
    }

    fn set_rate(&mut self, now: f64, id: FlowId, rate: f64) {
        let Some(f) = self.slots.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if f.rate == rate && self.due.contains(&id) {
            return f.settle(now);
        }
        self.repredict(now, id, rate);
    }

    /// Settles what `id` sent until `now`, gives it `rate` and moves its
    /// next due time in the queue.
    fn repredict(&mut self, now: f64, id: FlowId, rate: f64) {
        let Some(f) = self.slots.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        f.settle(now);
        self.total += rate - f.rate;
        if self.seeds[f.from as usize] {
            self.seed_total += rate - f.rate;
        }
        if let Some((_, into)) = f.cross {
            self.wan_in_total[into as usize] += rate - f.rate;
        }
        f.rate = rate;
        let t = f.due_at(now);
        if t.is_finite() {
            self.due.update_key_or_push(&id, (At(t), id));
        } else if self.due.contains(&id) {
            self.due.remove(&id);
        }
    }

    /// Max-min fair rates for every flow, by progressive filling.
    fn rerate_all_exact(&mut self, now: f64) {
        let ids: Vec<FlowId> = (0..self.slots.len() as FlowId).filter(|&i| self.get(i).is_some()).collect();
        // A link is (kind, index); every flow crosses 2 or 4 links.
        let links_of = |f: &Flow| {
            let mut l = vec![(0u8, f.from), (1u8, f.to)];
            if let Some((o, i)) = f.cross {
                l.push((2, o));
                l.push((3, i));
            }
            l
        };
        let capacity = |(k, i): (u8, u32)| match k {
            0 => self.cap.up[i as usize],
            1 => self.cap.down[i as usize],
            2 => self.cap.wan_out[i as usize],
            _ => self.cap.wan_in[i as usize],
        };
        let mut rate: std::collections::HashMap<FlowId, f64> = std::collections::HashMap::new();
        let mut open: Vec<FlowId> = ids.clone();
        while !open.is_empty() {
            // Remaining capacity and open flows per link.
            let mut load: std::collections::BTreeMap<(u8, u32), (f64, u32)> = std::collections::BTreeMap::new();
            for &id in &ids {
                let Some(f) = self.get(id) else { continue };
                for l in links_of(f) {
                    let e = load.entry(l).or_insert_with(|| (capacity(l), 0));
                    match rate.get(&id) {
                        Some(r) => e.0 -= r,
                        None => e.1 += 1,
                    }
                }
            }
            let Some((&bottleneck, &(left, n))) = load
                .iter()
                .filter(|(_, (_, n))| *n > 0)
                .min_by(|a, b| (a.1.0 / a.1.1 as f64).total_cmp(&(b.1.0 / b.1.1 as f64)))
            else {
                break;
            };
            let fair = (left / n as f64).max(0.0);
            open.retain(|&id| {
                let through = self.get(id).is_some_and(|f| links_of(f).contains(&bottleneck));
                if through {
                    rate.insert(id, fair);
                }
                !through
            });
        }
        for id in ids {
            let r = rate.get(&id).copied().unwrap_or(0.0);
            self.set_rate(now, id, r);
        }
    }
}
