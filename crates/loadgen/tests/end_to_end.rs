//! Runs the real `hermod-loadgen` binary against a small SMTP sink on a
//! loopback port chosen by the OS.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Clone)]
struct Behaviour {
    rcpt_code: u16,
    pipelining: bool,
    /// Close the connection silently after this many messages, as an MTA
    /// with a per-connection message limit or idle timeout would.
    close_after: Option<usize>,
    tls: Option<TlsAcceptor>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            rcpt_code: 250,
            pipelining: true,
            close_after: None,
            tls: None,
        }
    }
}

struct Sink {
    addr: SocketAddr,
    issued: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    tls_sessions: Arc<AtomicUsize>,
}

async fn start_sink(behaviour: Behaviour) -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = Sink {
        addr: listener.local_addr().unwrap(),
        issued: Arc::default(),
        connections: Arc::default(),
        tls_sessions: Arc::default(),
    };
    let (issued, connections, tls_sessions) = (
        sink.issued.clone(),
        sink.connections.clone(),
        sink.tls_sessions.clone(),
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            let (b, issued, tls_sessions) =
                (behaviour.clone(), issued.clone(), tls_sessions.clone());
            tokio::spawn(async move {
                let mut tcp = tcp;
                if tcp.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                    return;
                }
                let Ok(Some(tcp)) = session(tcp, &b, &issued, false).await else {
                    return;
                };
                let Some(acceptor) = &b.tls else { return };
                if let Ok(tls) = acceptor.accept(tcp).await {
                    tls_sessions.fetch_add(1, Ordering::SeqCst);
                    let _ = session(tls, &b, &issued, true).await;
                }
            });
        }
    });
    sink
}

/// Serves one session; returns the stream when the client asked for
/// STARTTLS so the caller can wrap it.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    b: &Behaviour,
    issued: &Mutex<Vec<String>>,
    tls_active: bool,
) -> std::io::Result<Option<S>> {
    let mut io = BufReader::new(io);
    let mut line = String::new();
    let mut accepted_rcpts = 0;
    let mut messages = 0;
    loop {
        line.clear();
        if io.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                let mut r = String::from("250-sink\r\n250-SIZE 100000000\r\n");
                if b.tls.is_some() && !tls_active {
                    r.push_str("250-STARTTLS\r\n");
                }
                if b.pipelining {
                    r.push_str("250-PIPELINING\r\n");
                }
                r + "250 8BITMIME\r\n"
            }
            "STAR" => {
                io.get_mut().write_all(b"220 go ahead\r\n").await?;
                return Ok(Some(io.into_inner()));
            }
            "MAIL" => {
                accepted_rcpts = 0;
                "250 sender ok\r\n".into()
            }
            "RCPT" if b.rcpt_code == 250 => {
                accepted_rcpts += 1;
                "250 rcpt ok\r\n".into()
            }
            "RCPT" => format!("{} 5.1.1 no such user\r\n", b.rcpt_code),
            "DATA" if accepted_rcpts == 0 => "554 no valid recipients\r\n".into(),
            "DATA" => {
                io.get_mut().write_all(b"354 go\r\n").await?;
                loop {
                    line.clear();
                    if io.read_line(&mut line).await? == 0 {
                        return Ok(None);
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                let id = {
                    let mut issued = issued.lock().unwrap();
                    let id = format!("{:032x}", issued.len() as u128 + 0xabc0_0000);
                    issued.push(id.clone());
                    id
                };
                messages += 1;
                io.get_mut()
                    .write_all(format!("250 OK ids={id}\r\n").as_bytes())
                    .await?;
                if b.close_after == Some(messages) {
                    return Ok(None);
                }
                continue;
            }
            "RSET" => "250 reset\r\n".into(),
            "QUIT" => {
                io.get_mut().write_all(b"221 bye\r\n").await?;
                return Ok(None);
            }
            _ => "500 unknown\r\n".into(),
        };
        io.get_mut().write_all(reply.as_bytes()).await?;
    }
}

async fn loadgen(addr: SocketAddr, extra: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hermod-loadgen"));
    cmd.arg("--target")
        .arg(addr.to_string())
        .args(["--quiet", "--timeout", "10s"])
        .args(extra)
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("loadgen finished in time")
        .expect("loadgen ran")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn two_hundred_pipelined_messages_over_four_connections_all_succeed_with_ids_logged() {
    let sink = start_sink(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (ids, summary, csv) = (
        dir.path().join("ids.txt"),
        dir.path().join("summary.json"),
        dir.path().join("samples.csv"),
    );
    let out = loadgen(
        sink.addr,
        &[
            "--messages",
            "200",
            "--connections",
            "4",
            "--size",
            "2KB",
            "--domains",
            "nats:3,amqp:1",
            "--ids-out",
            ids.to_str().unwrap(),
            "--json",
            summary.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", describe(&out));

    let logged: Vec<String> = std::fs::read_to_string(&ids)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(logged.len(), 200);
    let logged: HashSet<String> = logged.into_iter().collect();
    let issued: HashSet<String> = sink.issued.lock().unwrap().iter().cloned().collect();
    assert_eq!(logged, issued, "every 250'd id is logged exactly once");

    let s = json(&summary);
    assert_eq!(s["messages_ok"], 200);
    assert_eq!(s["messages_failed"], 0);
    assert!(s["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(s["cores"].as_u64().unwrap() >= 1);
    assert_eq!(
        sink.connections.load(Ordering::SeqCst),
        4,
        "connections are reused across messages"
    );
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(csv.starts_with("second,ok,failed,p50_ms,p99_ms\n"), "{csv}");
    let csv_ok: u64 = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(csv_ok, 200, "per-second samples add up to the total");
    assert!(String::from_utf8_lossy(&out.stdout).contains("messages ok 200"));
}

#[tokio::test]
async fn rcpt_refusals_fail_the_run_and_are_never_counted_as_success() {
    let sink = start_sink(Behaviour {
        rcpt_code: 550,
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let out = loadgen(
        sink.addr,
        &[
            "--messages",
            "20",
            "--connections",
            "2",
            "--json",
            summary.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let s = json(&summary);
    assert_eq!(s["messages_ok"], 0);
    assert_eq!(s["messages_failed"], 20);
    let reasons = s["failures"].as_object().unwrap();
    assert!(
        reasons.keys().any(|k| k.starts_with("RCPT TO: 550")),
        "{reasons:?}"
    );
    // Refusals leave the session usable: no reconnect per message.
    assert_eq!(sink.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn keep_going_exits_zero_but_still_reports_failures() {
    let sink = start_sink(Behaviour {
        rcpt_code: 550,
        ..Behaviour::default()
    })
    .await;
    let out = loadgen(
        sink.addr,
        &["--messages", "5", "--connections", "1", "--keep-going"],
    )
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("failed 5"),
        "{}",
        describe(&out)
    );
}

#[tokio::test]
async fn server_without_pipelining_is_driven_one_command_at_a_time() {
    let sink = start_sink(Behaviour {
        pipelining: false,
        ..Behaviour::default()
    })
    .await;
    let out = loadgen(
        sink.addr,
        &[
            "--messages",
            "30",
            "--connections",
            "3",
            "--recipients",
            "2",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sink.issued.lock().unwrap().len(), 30);
}

#[tokio::test]
async fn connections_closed_by_the_server_are_reopened_without_losing_messages() {
    let sink = start_sink(Behaviour {
        close_after: Some(3),
        ..Behaviour::default()
    })
    .await;
    let out = loadgen(sink.addr, &["--messages", "30", "--connections", "2"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sink.issued.lock().unwrap().len(), 30);
    assert!(sink.connections.load(Ordering::SeqCst) >= 10);
}

#[tokio::test]
async fn starttls_upgrades_every_connection_before_sending() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let certs: Vec<CertificateDer<'static>> = vec![ck.cert.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let sink = start_sink(Behaviour {
        tls: Some(TlsAcceptor::from(Arc::new(config))),
        ..Behaviour::default()
    })
    .await;
    let out = loadgen(
        sink.addr,
        &[
            "--messages",
            "10",
            "--connections",
            "2",
            "--starttls",
            "--tls-server-name",
            "localhost",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sink.issued.lock().unwrap().len(), 10);
    assert_eq!(sink.tls_sessions.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unreachable_server_counts_messages_as_failed() {
    // Bind then drop to get a loopback port with nothing listening.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let out = loadgen(addr, &["--messages", "3", "--connections", "1"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed 3"));
}

#[tokio::test]
async fn remote_targets_are_refused_by_default() {
    let addr: SocketAddr = "192.0.2.1:25".parse().unwrap();
    let out = loadgen(addr, &["--messages", "1"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-remote"));
}

#[tokio::test]
async fn duration_runs_stop_on_time_and_respect_the_rate_limit() {
    let sink = start_sink(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let started = std::time::Instant::now();
    let out = loadgen(
        sink.addr,
        &[
            "--duration",
            "2s",
            "--rate",
            "50",
            "--connections",
            "4",
            "--json",
            summary.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(started.elapsed() < Duration::from_secs(15));
    let ok = json(&summary)["messages_ok"].as_u64().unwrap();
    // 2 s at 50/s plus the 5-token burst; the lower bound leaves room for
    // a loaded CI machine.
    assert!((40..=106).contains(&ok), "sent {ok}");
    assert_eq!(sink.issued.lock().unwrap().len() as u64, ok);
}
