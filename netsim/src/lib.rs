//! Flow-level discrete-event simulator for imageswarm's swarm.
//!
//! Planned contract (not implemented yet): drive `proto`'s swarm state
//! machine, unchanged, for 10,000+ nodes across several sites, with each
//! chunk transfer a flow sharing the sender's upload, the receiver's download
//! and the WAN links between sites; seeded and deterministic; reporting
//! completion percentiles against the Kumar–Ross lower bound.
