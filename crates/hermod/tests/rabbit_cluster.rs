//! Broker failover, RabbitMQ: three private RabbitMQ nodes clustered on loopback, a quorum
//! queue with a member on each. Under continuous SMTP load the node that hosts the queue's
//! leader is killed (SIGKILL) and restarted, more than once; the first kill hits the node
//! Hermod publishes to first. Every id Hermod answered 250 for must be in the queue.
//!
//! KumoMTA's `kumo.amqp.basic_publish` takes one host, so the policy fails over the way an
//! operator would: its custom_lua `send` tries the nodes in turn (`pcall` around each publish)
//! and raises the last error when none confirms, which makes the delivery a retry. AMQP has no
//! deduplication: a publish whose confirm the kill cut off may already be in the queue, and the
//! next node stores it again. Those duplicates are counted per kill: at most the publishes in
//! flight where the node Hermod publishes to was killed, none where another leader was.
//!
//! CI runs two kills (node 0, then the new leader); `HERMOD_CLUSTER_KILLS` raises the count
//! (bench/crash). Measured boot times and memory of the three nodes are in RELIABILITY.md.

mod common;
mod support_crash;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support_crash::amqp::{consume_all, declare_quorum, node_daemon, rabbitmqctl, uri};
use support_crash::broker::{prelude, retry, Contents, Daemon};
use support_crash::load::Load;
use support_crash::{env_or, free_port, unique, Hermod, Tally};

const NODES: usize = 3;
/// The node the policy tries first: Hermod publishes to it whenever it is up.
const FIRST: usize = 0;
const DRAIN: Duration = Duration::from_secs(90);
/// How long each killed node stays down before its restart.
const DOWN: Duration = Duration::from_secs(4);
/// The most publishes one kill of the node Hermod publishes to can leave stored twice: those
/// awaiting its confirm, at most one per delivery session (the queue allows the default 32);
/// each fails over to the next node, which stores it again. Killing another node (a leader
/// only) repeats nothing: the node Hermod publishes to re-sends pending publishes to the new
/// leader under their original sequence numbers, and the queue drops those it already has.
const IN_FLIGHT: usize = 32;

struct Node {
    name: String,
    daemon: Daemon,
}

struct Cluster {
    /// HOME of every node and of rabbitmqctl: the shared Erlang cookie.
    home: PathBuf,
    nodes: Vec<Node>,
    queue: String,
}

/// Sum of VmRSS over the processes of the process group `pgid`, in KiB.
fn group_rss_kib(pgid: u32) -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .flatten()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(p.path().join("stat")).ok()?;
            // Fields after the command name (which ends at the last ')'): state, ppid, pgrp.
            let rest = stat.get(stat.rfind(')')? + 2..)?;
            let pgrp: u32 = rest.split_whitespace().nth(2)?.parse().ok()?;
            if pgrp != pgid {
                return None;
            }
            let status = std::fs::read_to_string(p.path().join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

impl Cluster {
    /// Three nodes with one cookie, each listing all three for `classic_config` peer
    /// discovery. The first boots alone; the other two then find it running and join it.
    fn start(dir: &Path) -> Cluster {
        let home = dir.join("home");
        std::fs::create_dir_all(&home).expect("creating the shared HOME");
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, unique("cookie")).expect("writing the Erlang cookie");
        {
            use std::os::unix::fs::PermissionsExt;
            // Erlang refuses a cookie file others can read.
            std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
                .expect("restricting the cookie");
        }
        let names: Vec<String> = (0..NODES)
            .map(|i| format!("{}@localhost", unique(&format!("hc{i}"))))
            .collect();
        let mut conf = String::from("cluster_formation.peer_discovery_backend = classic_config\n");
        for (i, n) in names.iter().enumerate() {
            conf.push_str(&format!(
                "cluster_formation.classic_config.nodes.{} = {n}\n",
                i + 1
            ));
        }
        let mut nodes: Vec<Node> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Node {
                name: name.clone(),
                daemon: node_daemon(&home, &dir.join(format!("r{i}")), name, free_port(), &conf),
            })
            .collect();
        let started = Instant::now();
        nodes[0].daemon.start();
        let first = started.elapsed();
        let joined = Instant::now();
        std::thread::scope(|s| {
            for n in nodes.iter_mut().skip(1) {
                s.spawn(move || n.daemon.start());
            }
        });
        let rss: Vec<String> = nodes
            .iter()
            .map(|n| {
                let kib = n.daemon.pid().map_or(0, group_rss_kib);
                format!("{} MiB", kib / 1024)
            })
            .collect();
        eprintln!(
            "MEASURE rabbitmq cluster: first node listening after {first:.1?}, the two joining \
             nodes after {:.1?} more (booted side by side), {:.1?} in all; RSS per node {rss:?}",
            joined.elapsed(),
            started.elapsed()
        );
        Cluster {
            home,
            nodes,
            queue: unique("cluster"),
        }
    }

    fn uri(&self, i: usize) -> String {
        uri(self.nodes[i].daemon.addr)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The queue's leader and its members online, as node `via` sees them.
    fn quorum(&self, via: usize) -> Result<(usize, usize), String> {
        let out = rabbitmqctl(
            &self.home,
            &self.nodes[via].name,
            &[
                "list_queues",
                "--quiet",
                "--formatter",
                "json",
                "name",
                "leader",
                "members",
                "online",
            ],
        )?;
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(out.trim()).map_err(|e| format!("{e}: {out}"))?;
        let row = rows
            .iter()
            .find(|r| r["name"] == self.queue.as_str())
            .ok_or_else(|| format!("no queue {} in {out}", self.queue))?;
        let ours = |v: &serde_json::Value| -> usize {
            v.as_array().map_or(0, |a| {
                a.iter()
                    .filter_map(|m| m.as_str())
                    .filter(|m| self.index(m).is_some())
                    .count()
            })
        };
        if ours(&row["members"]) != NODES {
            return Err(format!("the queue does not have {NODES} members: {row}"));
        }
        let leader = row["leader"]
            .as_str()
            .and_then(|l| self.index(l))
            .ok_or_else(|| format!("no leader among our nodes: {row}"))?;
        Ok((leader, ours(&row["online"])))
    }

    /// The leader once every member is online again (after a restart it catches up first).
    async fn settled_leader(&self, via: usize) -> usize {
        retry(
            "finding the queue's leader",
            Duration::from_secs(60),
            || async {
                match tokio::task::block_in_place(|| self.quorum(via))? {
                    (leader, NODES) => Ok(leader),
                    (_, online) => Err(format!("{online} of {NODES} members online")),
                }
            },
        )
        .await
    }

    /// How long until a node other than `killed` leads, as node `via` sees it.
    async fn failover(&self, killed: usize, via: usize) -> Duration {
        let since = Instant::now();
        let leader = retry("electing a new leader", Duration::from_secs(60), || async {
            match tokio::task::block_in_place(|| self.quorum(via))? {
                (leader, _) if leader != killed => Ok(leader),
                _ => Err("the killed node still leads".to_string()),
            }
        })
        .await;
        let took = since.elapsed();
        eprintln!("new leader {} after {took:.1?}", self.nodes[leader].name);
        took
    }
}

/// P0 plus a custom_lua delivery for domain `amqp` that publishes to the nodes in turn.
fn policy(
    dir: &Path,
    smtp: std::net::SocketAddr,
    http: std::net::SocketAddr,
    cluster: &Cluster,
) -> String {
    let nodes = cluster
        .nodes
        .iter()
        .map(|n| format!("{{ host = '127.0.0.1', port = {} }}", n.daemon.addr.port()))
        .collect::<Vec<_>>()
        .join(", ");
    let queue = &cluster.queue;
    format!(
        r#"{}
-- The nodes of the cluster in the order they are tried.
local NODES = {{ {nodes} }}
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'amqp' then
    return kumo.make_queue_config {{
      retry_interval = '1s',
      protocol = {{ custom_lua = {{ constructor = 'make.amqp' }} }},
    }}
  end
  return kumo.make_queue_config {{}}
end)
kumo.on('make.amqp', function(domain, tenant, campaign)
  local conn = {{}}
  function conn:send(msg)
    local last
    for _, node in ipairs(NODES) do
      local ok, err = pcall(kumo.amqp.basic_publish, {{
        routing_key = '{queue}',
        payload = msg:get_data(),
        message_id = msg:id(),
        connection = {{ host = node.host, port = node.port }},
      }})
      if ok then
        return '250 ok'
      end
      last = err
    end
    error(last)
  end
  function conn:close() end
  return conn
end)
"#,
        prelude(dir, &dir.join("spool"), smtp, http)
    )
}

/// Extra copies per kill, and after the last restart. `marks[k]` is how many ids had been
/// acknowledged when the node of kill k was back. A message in flight at kill k was
/// acknowledged after the previous restart (at least 3 s of load before the kill), so its
/// extra copies are charged to the span its id was acknowledged in; `order` is the ids in the
/// order their 250s came, and an id not in it came last.
fn extra_copies_per_kill(contents: &Contents, order: &[String], marks: &[usize]) -> Vec<usize> {
    let index: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut per_kill = vec![0; marks.len() + 1];
    for (id, copies) in &contents.positions {
        if copies.len() > 1 {
            let span = index
                .get(id.as_str())
                .map_or(marks.len(), |i| marks.partition_point(|m| m <= i));
            per_kill[span] += copies.len() - 1;
        }
    }
    per_kill
}

/// Wait until the queue holds every id of `accepted`; the tally of the last look.
async fn drained(cluster: &Cluster, contents: &mut Contents, accepted: &HashSet<String>) -> Tally {
    let deadline = Instant::now() + DRAIN;
    loop {
        if let Err(e) = consume_all(&cluster.uri(0), &cluster.queue, contents).await {
            eprintln!("reading the queue: {e}");
        }
        let tally = Tally::new(accepted, &contents.copies());
        if tally.lost.is_empty() || Instant::now() > deadline {
            return tally;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_quorum_queue_leader_of_a_three_node_rabbitmq_cluster_loses_nothing() {
    let kills: usize = env_or("HERMOD_CLUSTER_KILLS", 2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(tmp.path()));
    // Declared through node 0, which therefore leads first: the first kill takes down the
    // leader and the node Hermod publishes to at once.
    let (first, queue) = (cluster.uri(FIRST), cluster.queue.clone());
    retry(
        "declaring the quorum queue",
        Duration::from_secs(60),
        || declare_quorum(&first, &queue),
    )
    .await;
    let leader = cluster.settled_leader(1).await;
    assert_eq!(
        leader, FIRST,
        "the queue was declared through node 0 but another node leads"
    );

    let dir = tmp.path().join("hermod");
    std::fs::create_dir_all(&dir).expect("creating the hermod dir");
    let mut hermod = Hermod::with_policy(&dir, |smtp, http| policy(&dir, smtp, http, &cluster));
    tokio::task::block_in_place(|| hermod.start());
    let load = Load::start(hermod.smtp, 2, "user@amqp", None);

    let mut killed = Vec::new();
    let mut failovers = Vec::new();
    let mut marks = Vec::new();
    for k in 0..kills {
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Asked of a node other than the one restarted last, once all members are online.
        let via = killed.last().map_or(1, |n| (n + 1) % NODES);
        let target = cluster.settled_leader(via).await;
        let survivor = (target + 1) % NODES;
        let before = load.accepted_count();
        let since = Instant::now();
        tokio::task::block_in_place(|| cluster.nodes[target].daemon.kill9());
        eprintln!(
            "kill {}/{kills}: leader {} with {before} accepted so far",
            k + 1,
            cluster.nodes[target].name
        );
        failovers.push(cluster.failover(target, survivor).await);
        tokio::time::sleep(DOWN.saturating_sub(since.elapsed())).await;
        let node = &mut cluster.nodes[target];
        tokio::task::block_in_place(|| node.daemon.start());
        eprintln!(
            "{} accepted while {} was down ({:.1?})",
            load.accepted_count() - before,
            node.name,
            since.elapsed()
        );
        killed.push(target);
        marks.push(load.accepted_count());
        hermod.assert_alive();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let order = load.accepted_ids();
    let report = load.stop().await;
    hermod.assert_alive();
    assert!(
        report.accepted.len() > 100,
        "too little load to mean anything: {report:?}"
    );

    let mut contents = Contents::default();
    let tally = drained(&cluster, &mut contents, &report.accepted).await;
    let per_kill = extra_copies_per_kill(&contents, &order, &marks);
    eprintln!(
        "{}",
        tally.line(&format!(
            "rabbitmq cluster, {kills} leaders killed (nodes {killed:?}), new leader seen within \
             {failovers:.1?}, extra copies per kill {:?}, after the last restart {}",
            &per_kill[..kills],
            per_kill[kills]
        ))
    );
    assert!(
        tally.lost.is_empty(),
        "{} acknowledged ids never reached the queue, e.g. {:?}\nhermod warnings:\n{}",
        tally.lost.len(),
        tally.lost.iter().take(5).collect::<Vec<_>>(),
        hermod.all_warnings()
    );
    assert_eq!(
        report.replies_250, tally.accepted,
        "Hermod returned the same id in two different 250 replies"
    );
    // A copy beyond the first is allowed only where a kill cut off a publish's confirm: on
    // the node Hermod was publishing to (see IN_FLIGHT).
    for (k, (node, extra)) in killed.iter().zip(&per_kill).enumerate() {
        let bound = if *node == FIRST { IN_FLIGHT } else { 0 };
        assert!(
            *extra <= bound,
            "kill {} (node {node}) left {extra} extra copies, more than {bound}",
            k + 1
        );
    }
    assert_eq!(
        per_kill[kills], 0,
        "extra copies of mail acknowledged after the last restart, which no kill explains"
    );
    assert!(
        contents.id_mismatches.is_empty(),
        "messages without their Hermod id as message_id: {:?}",
        &contents.id_mismatches[..contents.id_mismatches.len().min(10)]
    );
    assert_eq!(
        contents.unparsable, 0,
        "queue messages without a Received id"
    );
}
