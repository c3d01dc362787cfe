//! contrib/grafana-imageswarm.json asks only for metrics that docs/CLI.md
//! names (and the nodes and trackers serve under those names, as
//! swarm.rs #1 and the tracker's tests check).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every `imageswarm_...` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("imageswarm_")
        .map(|(i, _)| text[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect())
        .collect()
}

/// Every expression of every panel's queries.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|v| exprs(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_asks_only_for_documented_metrics() {
    let documented: BTreeSet<String> =
        read("docs/CLI.md").lines().filter_map(|l| l.strip_prefix("| `")).flat_map(metric_names).collect();
    assert!(documented.len() >= 20, "{documented:?}");
    let dashboard: serde_json::Value = serde_json::from_str(&read("contrib/grafana-imageswarm.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= panels.len(), "every panel queries something");
    let asked: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    let undocumented: Vec<_> = asked.difference(&documented).collect();
    assert!(undocumented.is_empty(), "the dashboard asks for undocumented metrics: {undocumented:?}");
    for needed in ["imageswarm_image_state", "imageswarm_source_bytes_total", "imageswarm_list_expiry_seconds"] {
        assert!(asked.contains(needed), "the dashboard shows {needed}");
    }
}
