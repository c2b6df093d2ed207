//! deploy/kubernetes as a scaled-out system (issue 15): how many replicas of each part,
//! a disruption budget for each, readiness apart from liveness, and NetworkPolicies
//! that let each part be reached only by what must call it. The expected tables are
//! written here by hand, independent of the manifests they check.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::manifests::Manifests;

#[rustfmt::skip]
const REPLICAS: &[(&str, u64)] = &[("gateway", 2), ("auth", 2), ("registry", 2), ("deploy", 3)];

/// Who may call each part (pods of the namespace by component, or namespaces).
#[rustfmt::skip]
const CALLERS: &[(&str, &[&str])] = &[
    ("gateway", &["deploy", "namespace:ingress-nginx", "namespace:monitoring"]),
    ("auth", &["deploy", "gateway", "registry"]),
    ("registry", &["auth", "deploy", "gateway"]),
    ("deploy", &["gateway"]),
];

/// Whom each part may call among the parts (DNS and PostgreSQL apart).
#[rustfmt::skip]
const CALLS: &[(&str, &[&str])] = &[
    ("gateway", &["auth", "deploy", "registry"]),
    ("auth", &["registry"]),
    ("registry", &["auth"]),
    ("deploy", &["auth", "gateway", "registry"]),
];

/// Whether a label selector (`matchLabels`, `matchExpressions` with `In`) selects pods
/// with `labels`. An empty selector selects every pod.
fn selects(selector: &Value, labels: &Value) -> bool {
    let labels_match = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| labels[k] == *v));
    let expressions_match = selector["matchExpressions"].as_array().is_none_or(|list| {
        list.iter().all(|e| {
            let values = e["values"].as_array().cloned().unwrap_or_default();
            match e["operator"].as_str() {
                Some("In") => values.contains(&labels[e["key"].as_str().unwrap_or("")]),
                other => panic!("selector operator {other:?} not understood here"),
            }
        })
    });
    labels_match && expressions_match
}

/// Each part's pod labels, by component.
fn parts(manifests: &Manifests) -> BTreeMap<String, Value> {
    manifests
        .workloads()
        .iter()
        .map(|w| {
            let labels = w.pod_labels().clone();
            (
                labels["app.kubernetes.io/component"].as_str().unwrap().to_owned(),
                labels,
            )
        })
        .collect()
}

#[test]
fn every_part_runs_replicated_with_a_disruption_budget_and_readiness() {
    let manifests = Manifests::load();
    for (part, replicas) in REPLICAS {
        let workload = manifests
            .workloads()
            .into_iter()
            .find(|w| w.pod_labels()["app.kubernetes.io/component"] == *part)
            .unwrap_or_else(|| panic!("no Deployment of {part}"));
        assert_eq!(workload.spec()["replicas"], *replicas, "{part}: replicas");
        assert_ne!(workload.spec()["strategy"]["type"], "Recreate", "{part}: rolls");
        let budgets: Vec<_> = manifests
            .of_kind("PodDisruptionBudget")
            .filter(|b| selects(&b.value["spec"]["selector"], workload.pod_labels()))
            .collect();
        assert_eq!(budgets.len(), 1, "{part}: one PodDisruptionBudget");
        let spec = &budgets[0].value["spec"];
        let unavailable = match (spec["maxUnavailable"].as_u64(), spec["minAvailable"].as_u64()) {
            (Some(max), None) => max,
            (None, Some(min)) => replicas - min.min(*replicas),
            _ => panic!("{part}: a budget gives maxUnavailable or minAvailable as a number"),
        };
        assert!(
            (1..*replicas).contains(&unavailable),
            "{part}: a drain may evict one pod at a time, never all ({unavailable} of {replicas})"
        );
        for container in workload.containers() {
            let context = container.context();
            if *part == "gateway" {
                assert_eq!(
                    container.value["readinessProbe"]["httpGet"]["path"], "/readyz",
                    "{context}"
                );
                continue;
            }
            // Readiness asks for the server's overall status ("can serve"); liveness for
            // the one that only says the process answers.
            let readiness = &container.value["readinessProbe"]["grpc"];
            assert!(
                readiness.is_object() && readiness["service"].is_null(),
                "{context}: readiness"
            );
            assert_eq!(
                container.value["livenessProbe"]["grpc"]["service"],
                common::server::LIVENESS,
                "{context}: liveness"
            );
        }
    }
}

#[test]
fn network_policies_let_each_part_reach_only_what_it_must() {
    let manifests = Manifests::load();
    let parts = parts(&manifests);
    let policies: Vec<&Value> = manifests.of_kind("NetworkPolicy").map(|d| &d.value).collect();
    assert!(
        policies.iter().any(|p| {
            p["spec"]["podSelector"].as_object().is_some_and(|s| s.is_empty())
                && p["spec"]["policyTypes"] == serde_json::json!(["Ingress", "Egress"])
                && p["spec"]["ingress"].is_null()
                && p["spec"]["egress"].is_null()
        }),
        "no default-deny policy for every pod of the namespace"
    );
    let applying = |labels: &Value| -> Vec<&Value> {
        policies
            .iter()
            .copied()
            .filter(|p| selects(&p["spec"]["podSelector"], labels))
            .collect()
    };
    // A peer (`from` / `to` entry) as the names used in the tables above.
    let peer = |entry: &Value| -> Vec<String> {
        if let Some(namespace) = entry["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str() {
            if namespace == "kube-system" {
                return vec!["dns".to_owned()];
            }
            return vec![format!("namespace:{namespace}")];
        }
        parts
            .iter()
            .filter(|(_, labels)| selects(&entry["podSelector"], labels))
            .map(|(part, _)| part.clone())
            .collect()
    };
    for (part, labels) in &parts {
        let mut callers = BTreeSet::new();
        let mut calls = BTreeSet::new();
        for policy in applying(labels) {
            for rule in policy["spec"]["ingress"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let from = rule["from"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{part}: ingress from anywhere"));
                callers.extend(from.iter().flat_map(peer));
            }
            for rule in policy["spec"]["egress"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                match rule["to"].as_array() {
                    Some(to) => calls.extend(to.iter().flat_map(peer)),
                    // Any address, on given ports only: PostgreSQL, the scripts' targets.
                    None => assert!(rule["ports"].is_array(), "{part}: egress to anything on any port"),
                }
            }
        }
        calls.remove("dns");
        let expected = |table: &[(&str, &[&str])]| -> BTreeSet<String> {
            let (_, list) = table.iter().find(|(p, _)| p == part).expect("a part of the tables");
            list.iter().map(|s| (*s).to_owned()).collect()
        };
        assert_eq!(callers, expected(CALLERS), "{part}: who may call it");
        assert_eq!(calls, expected(CALLS), "{part}: whom it may call");
    }
}
