//! The storage contract (rs2-state-testkit) on a real standalone server and a real cluster.

mod common;

use common::{cluster, cluster_nodes, redis_url, standalone, unique_prefix};
use rs2_state_testkit::Conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_redis_meets_the_storage_contract() {
    let Some(url) = redis_url() else { return };
    let second_url = url.clone();
    let report = Conformance::new(move || {
        let url = url.clone();
        async move { standalone(&url, &unique_prefix("kit")).await }
    })
    .second_instance(move |store: &rs2_state_redis::RedisState| {
        let (url, prefix) = (second_url.clone(), store.prefix().to_string());
        async move { standalone(&url, &prefix).await }
    })
    .run()
    .await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_meets_the_storage_contract() {
    let Some(nodes) = cluster_nodes() else { return };
    let second_nodes = nodes.clone();
    let report = Conformance::new(move || {
        let nodes = nodes.clone();
        async move { cluster(&nodes, &unique_prefix("kit-cluster")).await }
    })
    .second_instance(move |store: &rs2_state_redis::RedisState| {
        let (nodes, prefix) = (second_nodes.clone(), store.prefix().to_string());
        async move { cluster(&nodes, &prefix).await }
    })
    .run()
    .await;
    println!("{report}");
    report.assert_passed();
}
