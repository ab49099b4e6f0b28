//! IPv6 listeners, as KumoMTA's example policy starts them (`listen = '[::]:25'`): an
//! ESMTP listener on the IPv6 loopback takes mail from an IPv6 peer, records that peer, and
//! the mail is delivered like any other.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{free_port, records_of, smtp, Server, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_esmtp_listener_on_ipv6_loopback_accepts_and_delivers_mail_from_an_ipv6_peer() {
    let port = free_port();
    let policy = format!(
        r#"
kumo.on('pre_init', function()
  kumo.start_esmtp_listener {{ listen = '[::1]:{port}', relay_hosts = {{ '::1' }} }}
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{
    protocol = {{ maildir_path = os.getenv('ACCEPT_DIR') .. '/maildir' }},
  }}
end)
"#
    );
    let server = Server::launch(ServerConfig::with_p0(&policy)).await;
    let addr: SocketAddr = format!("[::1]:{port}").parse().expect("address");
    let mut client = smtp::Client::connect(addr).await;
    let id = client
        .send(
            "sender@v6.example",
            "rcpt@v6.example",
            b"Subject: over IPv6\r\n\r\nhello\r\n",
        )
        .await;
    client.quit().await;
    let ids: HashSet<String> = [id].into_iter().collect();
    let records = server
        .wait_for_records(Duration::from_secs(30), "the Delivery", |r| {
            records_of(r, "Delivery", &ids).len() == 1
        })
        .await;
    let reception = records_of(&records, "Reception", &ids);
    assert_eq!(reception.len(), 1, "{records:?}");
    let text = reception[0].to_string();
    assert!(
        text.contains("::1"),
        "the Reception record names the IPv6 peer: {text}"
    );
    let files = std::fs::read_dir(server.dir().join("maildir/new"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(files, 1, "the message is in the maildir");
}
