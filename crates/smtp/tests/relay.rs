//! `get_listener_domain` at the listener over real TCP: each domain is asked
//! once per connection, the `listener` argument is the address reached, and
//! a failing or rejecting handler answers RCPT TO as other events do.

mod common;

use common::*;

/// No relay hosts: only listener domains let mail through. Each call counts
/// itself in the connection meta, which every message of the connection copies.
const POLICY: &str = r#"
local kumo = require 'kumo'
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  local key = 'calls_' .. domain
  conn_meta:set_meta(key, (conn_meta:get_meta(key) or 0) + 1)
  conn_meta:set_meta('listener', listener)
  if domain == 'boom.test' then error('directory down') end
  if domain == 'busy.test' then kumo.reject(451, '4.3.0 try later') end
  if domain == 'odd.test' then return 'relay please' end
  if domain == 'in.test' then return kumo.make_listener_domain { relay_to = true } end
end)
"#;

async fn server() -> Server {
    let mut cfg = config();
    cfg.relay_hosts = Vec::new();
    start_with(cfg, POLICY).await
}

#[tokio::test]
async fn each_domain_is_asked_once_per_connection_with_the_address_reached() {
    let srv = server().await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("MAIL FROM:<a@s.test>", 250).await;
    c.cmd("RCPT TO:<x@in.test>", 250).await;
    c.cmd("RCPT TO:<y@in.test>", 250).await;
    c.cmd("RCPT TO:<z@out.test>", 550).await;
    c.cmd("DATA", 354).await;
    c.send("Subject: hi\r\n\r\nx\r\n.\r\n").await;
    let text = c.expect(250).await;
    assert!(text.starts_with("OK ids="), "{text}");
    // Asked again after DATA, from the cache: still one call per domain.
    let messages = srv.acceptor.messages();
    assert_eq!(messages.len(), 2);
    let m = &messages[1];
    assert_eq!(m.get_meta("calls_in.test").unwrap(), 1);
    assert_eq!(m.get_meta("calls_s.test").unwrap(), 1);
    assert_eq!(
        m.get_meta("listener").unwrap(),
        srv.addr.to_string().as_str()
    );
}

#[tokio::test]
async fn a_failing_handler_ends_the_session_and_a_rejecting_one_answers_rcpt() {
    let srv = server().await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("MAIL FROM:<a@s.test>", 250).await;
    assert_eq!(c.cmd("RCPT TO:<x@busy.test>", 451).await, "4.3.0 try later");
    let text = c.cmd("RCPT TO:<x@boom.test>", 421).await;
    assert!(text.starts_with("4.3.0"), "{text}");
    assert!(c.closed().await);

    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("MAIL FROM:<a@s.test>", 250).await;
    let text = c.cmd("RCPT TO:<x@odd.test>", 421).await;
    assert!(
        text.starts_with("4.3.0"),
        "a string is not a listener domain: {text}"
    );
    assert!(srv.acceptor.messages().is_empty());
}
