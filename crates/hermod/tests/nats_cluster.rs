//! Broker failover: a three-node NATS JetStream cluster on loopback with a replicated (R3)
//! stream. Under continuous SMTP load, the stream leader's process is killed (SIGKILL) and
//! later restarted, more than once. Hermod's `kumo.nats.connect { servers = {...} }` lists the
//! three servers; it must reconnect by itself, and the stream must hold every id Hermod
//! answered 250 for, exactly once (JetStream deduplicates re-publishes by `Nats-Msg-Id`).
//!
//! CI runs three kills (each node once, the stream leader whenever it was not killed
//! before, so the server Hermod is connected to dies too); `HERMOD_CLUSTER_KILLS` raises the count (bench/crash).

mod common;
mod support_crash;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use support_crash::broker::{retry, seed_policy, Contents, Daemon};
use support_crash::load::Load;
use support_crash::{env_or, free_port, unique, Hermod, Tally, STARTUP};

const NATS_SERVER: &str = "/usr/sbin/nats-server";
const DRAIN: Duration = Duration::from_secs(90);

struct Node {
    name: String,
    daemon: Daemon,
}

/// Three nats-servers routed to each other, JetStream stores below `dir`.
fn start_cluster(dir: &Path) -> Vec<Node> {
    let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cluster = unique("hc");
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let name = format!("n{i}");
            let store = dir.join(&name);
            std::fs::create_dir_all(&store).expect("creating a JetStream store");
            let routes: Vec<String> = (0..3)
                .filter(|j| *j != i)
                .map(|j| format!("nats://127.0.0.1:{}", route[j]))
                .collect();
            let daemon = Daemon::new(
                "nats-server",
                NATS_SERVER.into(),
                format!("127.0.0.1:{}", client[i]).parse().unwrap(),
                dir.join(format!("{name}.log")),
            )
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(client[i].to_string())
            .arg("-js")
            .arg("-sd")
            .arg(store)
            .arg("--server_name")
            .arg(&name)
            .arg("--cluster_name")
            .arg(&cluster)
            .arg("--cluster")
            .arg(format!("nats://127.0.0.1:{}", route[i]))
            .arg("--routes")
            .arg(routes.join(","));
            Node { name, daemon }
        })
        .collect();
    for n in &mut nodes {
        n.daemon.start();
    }
    nodes
}

fn urls(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(|n| n.daemon.addr.to_string()).collect()
}

async fn client(nodes: &[Node]) -> Result<async_nats::Client, String> {
    let urls: Vec<String> = urls(nodes).iter().map(|a| format!("nats://{a}")).collect();
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(urls)
        .await
        .map_err(|e| e.to_string())
}

/// The R3 stream (once the cluster has a JetStream meta leader).
async fn create_stream(js: &jetstream::Context, name: &str, subject: &str) {
    retry("creating the replicated stream", STARTUP * 2, || async {
        js.create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            num_replicas: 3,
            duplicate_window: Duration::from_secs(300),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
    .await;
}

async fn leader(js: &jetstream::Context, name: &str) -> String {
    retry("finding the stream leader", STARTUP, || async {
        let mut s = js.get_stream(name).await.map_err(|e| e.to_string())?;
        let info = s.info().await.map_err(|e| e.to_string())?;
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .ok_or_else(|| "no leader yet".to_string())
    })
    .await
}

/// Every message of the stream, by the Hermod id in its payload.
async fn contents(js: &jetstream::Context, name: &str) -> Result<Contents, String> {
    let mut s = js.get_stream(name).await.map_err(|e| e.to_string())?;
    let last = s
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .last_sequence;
    let mut c = Contents::default();
    for seq in 1..=last {
        let msg = s.get_raw_message(seq).await.map_err(|e| e.to_string())?;
        let id = msg
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_string());
        c.record(&msg.payload, id);
    }
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_each_node_of_a_three_node_jetstream_cluster_leader_first_loses_and_duplicates_nothing(
) {
    let kills: usize = env_or("HERMOD_CLUSTER_KILLS", 3);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nodes = tokio::task::block_in_place(|| start_cluster(tmp.path()));
    let nc = client(&nodes).await.expect("connecting to the cluster");
    let js = jetstream::new(nc);
    let name = unique("CLUSTER");
    let subject = unique("cluster").replace('_', ".");
    create_stream(&js, &name, &subject).await;

    let servers = urls(&nodes)
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let hdir = tmp.path().join("hermod");
    let mut hermod = Hermod::with_policy(&hdir, |smtp, http| {
        seed_policy(
            &hdir,
            smtp,
            http,
            "a1-nats-legacy.lua",
            &[
                ("'127.0.0.1:4222'", servers.clone()),
                ("subject = 'subject'", format!("subject = '{subject}'")),
            ],
        )
    });
    hermod.start();
    let load = Load::start(hermod.smtp, 4, "user@nats", None);

    let mut killed = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The leader, unless it was killed before: then a node not killed yet, so that
        // three kills take down every node once, the one Hermod is connected to included.
        let lead = leader(&js, &name).await;
        let target = if killed.contains(&lead) {
            nodes
                .iter()
                .map(|n| n.name.clone())
                .find(|n| !killed.contains(n))
                .unwrap_or(lead)
        } else {
            lead
        };
        let node = nodes
            .iter_mut()
            .find(|n| n.name == target)
            .unwrap_or_else(|| panic!("{target} is not one of ours"));
        let lead = target;
        let before = load.accepted_count();
        node.daemon.kill9();
        eprintln!("killed {lead} with {before} accepted so far");
        tokio::time::sleep(Duration::from_secs(4)).await;
        tokio::task::block_in_place(|| node.daemon.start());
        killed.push(lead);
        hermod.assert_alive();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;
    hermod.assert_alive();
    assert!(
        report.accepted.len() > 100,
        "too little load to mean anything: {report:?}"
    );

    // Every acknowledged id reaches the stream (retries after the failovers included).
    let deadline = Instant::now() + DRAIN;
    let tally = loop {
        let in_stream: HashMap<String, usize> = match contents(&js, &name).await {
            Ok(c) => c.copies(),
            Err(e) => {
                eprintln!("reading the stream: {e}");
                HashMap::new()
            }
        };
        let tally = Tally::new(&report.accepted, &in_stream);
        if tally.lost.is_empty() || Instant::now() > deadline {
            break tally;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "{}",
        tally.line(&format!("nats cluster, nodes killed {killed:?}"))
    );
    assert!(
        tally.lost.is_empty(),
        "{} acknowledged ids never reached the stream, e.g. {:?}\nhermod stderr:\n{}",
        tally.lost.len(),
        tally.lost.iter().take(5).collect::<Vec<_>>(),
        hermod.stderr_text()
    );
    assert_eq!(tally.duplicated_ids, 0, "{}", tally.line("duplicates"));
}
