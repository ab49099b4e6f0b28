//! Broker failover: a three-node NATS JetStream cluster on loopback with a replicated (R3)
//! stream. Under continuous SMTP load, the stream leader's process is killed (SIGKILL) and
//! later restarted, more than once. Hermod's `kumo.nats.connect { servers = {...} }` lists the
//! three servers; it must reconnect by itself, and the stream must hold every id Hermod
//! answered 250 for, exactly once (JetStream deduplicates re-publishes by `Nats-Msg-Id`).
//!
//! A second test runs two Hermod nodes, each with its own spool, into the same cluster; while
//! the stream has lost its quorum (two nodes down) one Hermod is killed with mail in its spool:
//! the other keeps accepting, and the killed one delivers its spool after its restart.
//!
//! CI runs three kills (each node once, the stream leader whenever it was not killed
//! before, so the server Hermod is connected to dies too); `HERMOD_CLUSTER_KILLS` raises the count (bench/crash).

mod common;
mod support_crash;

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

/// Read the messages stored since the last call into `c` (by the Hermod id in each payload).
async fn refresh(js: &jetstream::Context, name: &str, c: &mut Contents) -> Result<(), String> {
    let mut s = js.get_stream(name).await.map_err(|e| e.to_string())?;
    let last = s
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .last_sequence;
    for seq in c.next + 1..=last {
        let msg = s.get_raw_message(seq).await.map_err(|e| e.to_string())?;
        let id = msg
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_string());
        c.record(&msg.payload, id);
    }
    Ok(())
}

/// Hermod with its own spool in `dir`, running seed A1 against every node of the cluster.
fn hermod_for(dir: &Path, nodes: &[Node], subject: &str) -> Hermod {
    let servers = urls(nodes)
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Hermod::with_policy(dir, |smtp, http| {
        seed_policy(
            dir,
            &dir.join("spool"),
            smtp,
            http,
            "a1-nats-legacy.lua",
            &[
                ("'127.0.0.1:4222'", servers),
                ("subject = 'subject'", format!("subject = '{subject}'")),
            ],
        )
    })
}

/// Wait until the stream holds every id of `accepted`; the tally of the last look.
async fn drained(
    js: &jetstream::Context,
    name: &str,
    contents: &mut Contents,
    accepted: &std::collections::HashSet<String>,
) -> Tally {
    let deadline = Instant::now() + DRAIN;
    loop {
        if let Err(e) = refresh(js, name, contents).await {
            eprintln!("reading the stream: {e}");
        }
        let tally = Tally::new(accepted, &contents.copies());
        if tally.lost.is_empty() || Instant::now() > deadline {
            return tally;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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

    let mut hermod = hermod_for(&tmp.path().join("hermod"), &nodes, &subject);
    hermod.start();
    let load = Load::start(hermod.smtp, 2, "user@nats", None);

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
    let tally = drained(&js, &name, &mut Contents::default(), &report.accepted).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hermod_nodes_share_the_cluster_and_a_killed_ones_spool_is_delivered_after_its_restart()
{
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nodes = tokio::task::block_in_place(|| start_cluster(tmp.path()));
    let js = jetstream::new(client(&nodes).await.expect("connecting to the cluster"));
    let name = unique("TWO");
    let subject = unique("two").replace('_', ".");
    create_stream(&js, &name, &subject).await;

    let mut a = hermod_for(&tmp.path().join("a"), &nodes, &subject);
    let mut b = hermod_for(&tmp.path().join("b"), &nodes, &subject);
    a.start();
    b.start();
    let load_a = Load::start(a.smtp, 1, "user@nats", None);
    let load_b = Load::start(b.smtp, 1, "user@nats", None);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The stream loses its quorum: two of three nodes die, publishes fail and accepted mail
    // waits in the spools. Then node a dies too; b keeps accepting meanwhile.
    tokio::task::block_in_place(|| {
        nodes[1].daemon.kill9();
        nodes[2].daemon.kill9();
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.kill9();
    let b_before = load_b.accepted_count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b_while_a_down = load_b.accepted_count() - b_before;
    b.assert_alive();
    assert!(
        b_while_a_down > 50,
        "b accepted only {b_while_a_down} while a was down"
    );
    tokio::task::block_in_place(|| {
        nodes[1].daemon.start();
        nodes[2].daemon.start();
    });

    // With the quorum back and b's backlog published, what a accepted and the stream lacks
    // can only be in a's spool: a is still down.
    let mut stream = Contents::default();
    let b_so_far = load_b.accepted_now();
    let b_caught_up = drained(&js, &name, &mut stream, &b_so_far).await;
    assert!(
        b_caught_up.lost.is_empty(),
        "{}",
        b_caught_up.line("b before a's restart")
    );
    let a_spooled = Tally::new(&load_a.accepted_now(), &stream.copies())
        .lost
        .len();
    assert!(a_spooled > 0, "a's spool held nothing when it was killed");
    tokio::task::block_in_place(|| a.start());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report_a = load_a.stop().await;
    let report_b = load_b.stop().await;
    a.assert_alive();
    b.assert_alive();

    let mut accepted = report_a.accepted.clone();
    accepted.extend(report_b.accepted.iter().cloned());
    let tally = drained(&js, &name, &mut stream, &accepted).await;
    eprintln!(
        "{}",
        tally.line(&format!(
            "two hermod nodes (a: {}, in a's spool at its kill: {a_spooled}, b: {}, b while a was down: {b_while_a_down})",
            report_a.accepted.len(),
            report_b.accepted.len()
        ))
    );
    assert!(
        tally.lost.is_empty(),
        "{} acknowledged ids never reached the stream, e.g. {:?}",
        tally.lost.len(),
        tally.lost.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(tally.duplicated_ids, 0, "{}", tally.line("duplicates"));
}
