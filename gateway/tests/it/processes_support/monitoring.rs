//! The dashboard and alert rules in `deploy/monitoring/` against a real
//! scrape: every word of every PromQL expression there must be PromQL's own,
//! a series a Quill process exposes, or a label one carries. A renamed
//! metric or label then fails here, not silently on an operator's screen.

use std::collections::BTreeSet;

use serde_json::Value;

use super::prometheus::Sample;

const DASHBOARD: &str = include_str!("../../../../deploy/monitoring/grafana-dashboard.json");
const ALERTS: &str = include_str!("../../../../deploy/monitoring/alerts.yaml");

/// PromQL's functions, aggregations and keywords that the files may use.
const PROMQL: &[&str] = &[
    "abs",
    "absent",
    "and",
    "avg",
    "avg_over_time",
    "bool",
    "by",
    "ceil",
    "changes",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "delta",
    "deriv",
    "floor",
    "group_left",
    "group_right",
    "histogram_quantile",
    "ignoring",
    "increase",
    "irate",
    "label_replace",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "offset",
    "on",
    "or",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "sum",
    "sum_over_time",
    "time",
    "topk",
    "bottomk",
    "unless",
    "vector",
    "without",
];

/// What Prometheus itself adds: the scrape-health series and target labels.
const FROM_PROMETHEUS: &[&str] = &["up", "job", "instance"];

/// Every expression in the Grafana dashboard and the alert rules.
pub fn expressions() -> Vec<String> {
    let mut found = Vec::new();
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    collect_targets(&dashboard, &mut found);
    let alerts: Value = serde_norway::from_str(ALERTS).expect("the alert rules are YAML");
    for group in alerts["groups"].as_array().expect("rule groups") {
        for rule in group["rules"].as_array().expect("rules") {
            found.push(rule["expr"].as_str().expect("a rule's expr").to_owned());
        }
    }
    found
}

fn collect_targets(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                found.push(expr.clone());
            }
            map.values().for_each(|v| collect_targets(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_targets(v, found)),
        _ => {}
    }
}

/// The names in `expr` that are not quoted strings, numbers, durations or
/// Grafana variables (`$__rate_interval`).
fn words(expr: &str) -> Vec<&str> {
    let bytes = expr.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' || c == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != c {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'$' || c.is_ascii_digit() {
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            words.push(&expr[start..i]);
        } else {
            i += 1;
        }
    }
    words
}

/// Fails, naming the expression, for any word that is neither PromQL nor in `exposed`.
pub fn assert_queries_match(exposed: &[Sample]) {
    let series: BTreeSet<&str> = exposed.iter().map(|s| s.name.as_str()).collect();
    let labels: BTreeSet<&str> = exposed
        .iter()
        .flat_map(|s| s.labels.keys().map(String::as_str))
        .collect();
    let expressions = expressions();
    assert!(expressions.len() >= 20, "{expressions:?}");
    let mut used = BTreeSet::new();
    for expr in &expressions {
        for word in words(expr) {
            let known = PROMQL.contains(&word)
                || FROM_PROMETHEUS.contains(&word)
                || series.contains(word)
                || labels.contains(word);
            assert!(
                known,
                "`{word}` in `{expr}` is no series or label a Quill process exposes"
            );
            if series.contains(word) {
                used.insert(word);
            }
        }
    }
    // The families the issue asks dashboards and alerts to be built on.
    for family in [
        "http_server_request_duration_seconds_bucket",
        "rpc_server_call_duration_seconds_count",
        "rpc_client_call_duration_seconds_bucket",
        "messaging_consumer_lag_seconds_bucket",
        "messaging_process_duration_seconds_bucket",
        "db_client_connection_count",
        "outbox_oldest_age_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(
            used.contains(family),
            "nothing in deploy/monitoring uses {family}"
        );
    }
}

#[test]
fn words_skip_strings_numbers_durations_and_variables() {
    assert_eq!(
        words(
            r#"sum by (le) (rate(a_b{c=~"5..",d!="x y"}[$__rate_interval])) > 0.05 or rate(e[5m])"#
        ),
        [
            "sum", "by", "le", "rate", "a_b", "c", "d", "or", "rate", "e"
        ]
    );
}
