//! `kumo.nats` against the JetStream server on 127.0.0.1:4222.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use mlua::{Table, Value};

const SERVER: &str = "127.0.0.1:4222";

async fn stream_for(subject: &str) -> jetstream::stream::Stream {
    let client = async_nats::connect(SERVER).await.expect("connect to nats");
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: subject.replace('.', "_"),
        subjects: vec![subject.to_string()],
        max_age: Duration::from_secs(600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("create stream")
}

#[tokio::test]
async fn publish_returns_the_pub_ack_and_the_stream_holds_the_message_with_its_msg_id() {
    let subject = common::unique("hermod.test.ack").replace('_', ".");
    let stream = stream_for(&subject).await;
    let lua = common::lua();
    hermod_policy::scope::enter(
        &lua,
        [(
            "SPOOL-ID-1".to_string(),
            bytes::Bytes::from_static(b"hello\xff"),
        )],
    );
    lua.globals().set("SUBJECT", subject.as_str()).unwrap();
    let (first, second): (Table, Table) = common::run(
        &lua,
        r#"
        local c = kumo.nats.connect{ servers = {'127.0.0.1:4222'}, name = 'hermod-test' }
        local a = c:publish{ subject = SUBJECT, payload = 'hello\xff' }
        local b = c:publish{ subject = SUBJECT, payload = 'hello\xff', headers = { ['X-Test'] = 'yes' } }
        return a, b
        "#,
    )
    .await
    .unwrap();
    assert_eq!(
        first.get::<String>("stream").unwrap(),
        stream.cached_info().config.name
    );
    assert_eq!(first.get::<u64>("sequence").unwrap(), 1);
    assert!(!first.get::<bool>("duplicate").unwrap());
    assert_eq!(first.get::<String>("value").unwrap(), "");
    assert_eq!(first.get::<String>("domain").unwrap(), "");
    // Same payload in the same scope carries the same Nats-Msg-Id: JetStream drops it.
    assert!(
        second.get::<bool>("duplicate").unwrap(),
        "second publish should be a duplicate"
    );

    let msg = stream.get_raw_message(1).await.unwrap();
    assert_eq!(msg.payload.as_ref(), b"hello\xff");
    assert_eq!(
        msg.headers.get("Nats-Msg-Id").unwrap().as_str(),
        "SPOOL-ID-1"
    );
}

#[tokio::test]
async fn policy_supplied_msg_id_wins_over_the_default() {
    let subject = common::unique("hermod.test.own").replace('_', ".");
    let stream = stream_for(&subject).await;
    let lua = common::lua();
    hermod_policy::scope::enter(
        &lua,
        [("SPOOL-ID-2".to_string(), bytes::Bytes::from_static(b"x"))],
    );
    lua.globals().set("SUBJECT", subject.as_str()).unwrap();
    let seq: u64 = common::run(
        &lua,
        r#"
        local c = kumo.nats.connect{ servers = {'nats://127.0.0.1:4222'} }
        return c:publish{ subject = SUBJECT, payload = 'x', headers = { ['Nats-Msg-Id'] = 'mine' } }.sequence
        "#,
    )
    .await
    .unwrap();
    let msg = stream.get_raw_message(seq).await.unwrap();
    assert_eq!(msg.headers.get("Nats-Msg-Id").unwrap().as_str(), "mine");
}

#[tokio::test]
async fn publish_to_a_subject_without_stream_raises_naming_the_subject() {
    let subject = common::unique("hermod.nostream").replace('_', ".");
    let lua = common::lua();
    lua.globals().set("SUBJECT", subject.as_str()).unwrap();
    let err = common::run::<Value>(
        &lua,
        r#"
        local c = kumo.nats.connect{ servers = {'127.0.0.1:4222'} }
        local r = c:publish{ subject = SUBJECT, payload = 'x' }
        return r
        "#,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains(&format!("subject '{subject}'")), "{err}");
    assert!(err.contains("no responders"), "{err}");
    assert!(err.contains("test.lua:3"), "{err}");
}

#[tokio::test]
async fn await_ack_false_returns_an_empty_table_and_the_message_still_arrives() {
    let subject = common::unique("hermod.test.noack").replace('_', ".");
    let stream = stream_for(&subject).await;
    let lua = common::lua();
    lua.globals().set("SUBJECT", subject.as_str()).unwrap();
    let n: i64 = common::run(
        &lua,
        r#"
        local c = kumo.nats.connect{ servers = {'127.0.0.1:4222'} }
        local r = c:publish{ subject = SUBJECT, payload = 'fire', await_ack = false }
        c:close()
        local n = 0
        for _ in pairs(r) do n = n + 1 end
        return n
        "#,
    )
    .await
    .unwrap();
    assert_eq!(n, 0);
    let mut stream = stream;
    for _ in 0..50 {
        if stream.info().await.unwrap().state.messages == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("message published without ack never reached the stream");
}

#[tokio::test]
async fn close_makes_every_copy_raise_client_was_closed() {
    let lua = common::lua();
    let client: Value = common::run(
        &lua,
        "return kumo.nats.connect{ servers = {'127.0.0.1:4222'} }",
    )
    .await
    .unwrap();
    // A copy as init-global propagation makes it, in another Lua state.
    let portable =
        hermod_policy::portable::Portable::capture(&lua, &client).expect("client is portable");
    let other = common::lua();
    other
        .globals()
        .set("C", portable.restore(&other).unwrap())
        .unwrap();
    lua.globals().set("C", client).unwrap();
    common::run::<()>(&lua, "C:close()").await.unwrap();
    let err = common::run::<Value>(&other, "return C:publish{ subject = 'a.b', payload = 'x' }")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("client was closed"), "{err}");
}

#[tokio::test]
async fn unknown_connect_key_is_rejected_naming_the_key() {
    let lua = common::lua();
    let err = common::run::<Value>(
        &lua,
        "local c = kumo.nats.connect{ servers = {'127.0.0.1:4222'}, sever = 1 }; return c",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("sever"), "{err}");
    assert!(err.contains("test.lua:1"), "{err}");
}

#[tokio::test]
async fn connect_applies_every_documented_option_and_its_credentials() {
    // A server that demands a user and password: connecting at all proves the credentials
    // were sent, and its monitoring endpoint shows the connection's name and user.
    let server = common::PrivateNats::start(&["--user", "opts-user", "--pass", "opts-secret-1"]);
    let lua = common::lua();
    lua.globals()
        .set("URL", format!("127.0.0.1:{}", server.port))
        .unwrap();
    common::run::<()>(
        &lua,
        r#"
        CONN = kumo.nats.connect{
            servers = {URL}, name = 'opts', no_echo = true, max_reconnects = 0,
            connection_timeout = '3s', ping_interval = { secs = 30, nanos = 0 },
            sender_capacity = 256, inbox_prefix = '_HERMOD', request_timeout = '2s',
            retry_on_initial_connect = false, ignore_discovered_servers = true,
            retain_servers_order = true,
            auth = { username = { key_data = 'opts-user' }, password = { key_data = 'opts-secret-1' } },
        }
        "#,
    )
    .await
    .expect("connecting with the right user and password");
    let connz = server.monitor_json("/connz?auth=1");
    let conns = connz["connections"].as_array().expect("connections");
    assert!(
        conns
            .iter()
            .any(|c| c["name"] == "opts" && c["authorized_user"] == "opts-user"),
        "the server sees a connection named 'opts' for user opts-user: {connz}"
    );
    common::run::<()>(&lua, "CONN:close()").await.unwrap();

    // The wrong password is refused, and the error does not repeat it.
    let err: String = common::run(
        &lua,
        r#"
        local ok, err = pcall(kumo.nats.connect, {
            servers = {URL}, max_reconnects = 0, connection_timeout = '3s',
            auth = { username = { key_data = 'opts-user' }, password = { key_data = 'wrong-secret-2' } },
        })
        assert(not ok, 'a wrong password must not connect')
        return tostring(err)
        "#,
    )
    .await
    .unwrap();
    assert!(
        err.to_lowercase().contains("authoriz"),
        "the error names the refusal: {err}"
    );
    assert!(!err.contains("wrong-secret-2"), "secret in error: {err}");

    // A token read from a file (trailing line break removed) authenticates against a token
    // server; a duration given as a string is accepted too.
    let token_server = common::PrivateNats::start(&["--auth", "opts-token-3"]);
    let file = std::env::temp_dir().join(common::unique("natstoken"));
    std::fs::write(&file, "opts-token-3\n").unwrap();
    lua.globals()
        .set("TOKEN_FILE", file.to_str().unwrap())
        .unwrap();
    lua.globals()
        .set("TOKEN_URL", format!("127.0.0.1:{}", token_server.port))
        .unwrap();
    common::run::<()>(
        &lua,
        r#"
        local d = kumo.nats.connect{ servers = {TOKEN_URL}, name = 'token', ping_interval = '20s',
            max_reconnects = 0, auth = { token = TOKEN_FILE } }
        d:close()
        local ok = pcall(kumo.nats.connect, { servers = {TOKEN_URL}, max_reconnects = 0,
            connection_timeout = '3s', auth = { token = { key_data = 'not-the-token' } } })
        assert(not ok, 'a wrong token must not connect')
        "#,
    )
    .await
    .expect("the token file authenticates; a wrong token does not");
    let _ = std::fs::remove_file(file);
}
