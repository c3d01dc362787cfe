//! imageswarm's tracker: per-image peer hints, site-aware.
//!
//! Planned contract (not implemented yet): keep, per image, the peers that
//! announced it with site, role, completeness and a TTL, and answer with a
//! bounded peer set: same-site peers first, complete peers before partial
//! ones, masters when few others have the image. Nodes treat trackers as
//! hints and keep working through Kademlia when every tracker is down.
