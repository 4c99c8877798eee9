//! The deployment files in `deploy/` (issue 19) agree with the server: the Kubernetes config
//! Secret's `antiphon.toml` is a valid config, and every metric the Grafana dashboard queries
//! is one the server exports. (Schema validation of the manifests, `haproxy -c` and
//! `kamailio -c` run in scripts/check-deploy.sh; the configs run for real in
//! scripts/cluster-test.sh.)

use std::collections::BTreeSet;
use std::path::PathBuf;

use antiphon_models::engine::EngineHealth;
use antiphon_server::config::Config;
use antiphon_server::health::{Report, render_metrics};
use antiphon_server::metrics::Metrics;

fn deploy(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The block scalar under `key: |` in a YAML file: its lines, unindented.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no `{key}: |` block"));
    let key_indent = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .expect("a non-empty block");
    body.iter()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_config_is_a_valid_node_config() {
    let toml = block_scalar(&deploy("k8s/config.yaml"), "antiphon.toml");
    let config = Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(config.server.port, 8080, "the probes and Service use 8080");
    assert_eq!(config.server.agent_check_listen, "0.0.0.0:9099");
    assert!(!config.server.admin_keys.is_empty());
    let statefulset = deploy("k8s/statefulset.yaml");
    let grace: u64 = statefulset
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > config.server.drain_grace_s + 5,
        "the kubelet must not kill a draining node ({grace} s vs a {} s drain and a 5 s preStop)",
        config.server.drain_grace_s
    );
}

/// Every `antiphon_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("antiphon_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn every_metric_on_the_dashboard_is_exported() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy("grafana/antiphon-fleet.json")).expect("dashboard JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("expr").to_string())
        .collect();
    assert!(exprs.len() >= 8);
    let report = Report {
        sessions_open: 0,
        sessions_max: 1,
        engines: vec![(
            "asr",
            EngineHealth {
                failure: None,
                capacity: Some(1),
                in_use: 0,
                backlog_ms: Some(0),
            },
        )],
        max_backlog_ms: 2000,
        draining: false,
    };
    let exported = Metrics::new().render() + &render_metrics(&report, "n");
    let families: BTreeSet<String> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    for name in metric_names(&exprs.join("\n")) {
        let family = name.strip_suffix("_bucket").unwrap_or(&name);
        assert!(
            families.contains(family),
            "the dashboard queries {name}, which the server does not export"
        );
    }
}
