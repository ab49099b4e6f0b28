//! `kumo.amqp` against RabbitMQ on 127.0.0.1:5672 (guest/guest).

mod common;

use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use mlua::{Table, Value};

const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

struct TestQueue {
    name: String,
    channel: lapin::Channel,
    _conn: Connection,
}

impl TestQueue {
    async fn new(prefix: &str) -> Self {
        let conn = Connection::connect(URI, ConnectionProperties::default())
            .await
            .expect("connect rabbitmq");
        let channel = conn.create_channel().await.unwrap();
        let name = common::unique(prefix);
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        TestQueue {
            name,
            channel,
            _conn: conn,
        }
    }

    async fn get(&self) -> Option<(Vec<u8>, BasicProperties)> {
        for _ in 0..20 {
            if let Some(m) = self
                .channel
                .basic_get(self.name.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return Some((m.delivery.data.clone(), m.delivery.properties.clone()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        None
    }

    async fn delete(self) {
        let _ = self
            .channel
            .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

#[tokio::test]
async fn confirm_wait_returns_ack_and_the_queue_holds_the_message_with_its_message_id() {
    let q = TestQueue::new("hermod_ack").await;
    let lua = common::lua();
    hermod_policy::scope::enter(
        &lua,
        [(
            "SPOOL-AMQP-1".to_string(),
            bytes::Bytes::from_static(b"bin\x00\xff"),
        )],
    );
    lua.globals().set("QUEUE", q.name.as_str()).unwrap();
    let (status, second_wait): (Table, String) = common::run(
        &lua,
        r#"
        local c = kumo.amqp.build_client('amqp://guest:guest@127.0.0.1:5672/%2f')
        local confirm = c:publish{ routing_key = QUEUE, payload = 'bin\0\xff',
            properties = { content_type = 'message/rfc822', delivery_mode = 2 } }
        local status = confirm:wait()
        local ok, err = pcall(function() return confirm:wait() end)
        return status, tostring(err)
        "#,
    )
    .await
    .unwrap();
    assert_eq!(status.get::<String>("status").unwrap(), "Ack");
    assert!(
        second_wait.contains("confirmation already taken"),
        "{second_wait}"
    );
    let (data, props) = q.get().await.expect("message in queue");
    assert_eq!(data, b"bin\x00\xff");
    assert_eq!(
        props.message_id().as_ref().map(|s| s.as_str()),
        Some("SPOOL-AMQP-1")
    );
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("message/rfc822")
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    q.delete().await;
}

#[tokio::test]
async fn fifty_clients_with_the_same_uri_share_one_connection() {
    let uri = format!("{URI}?heartbeat=17");
    let q = TestQueue::new("hermod_pool").await;
    let lua = common::lua();
    lua.globals().set("URI", uri.as_str()).unwrap();
    lua.globals().set("QUEUE", q.name.as_str()).unwrap();
    let acks: i64 = common::run(
        &lua,
        r#"
        local acks = 0
        for i = 1, 50 do
            local c = kumo.amqp.build_client(URI)
            if c:publish{ routing_key = QUEUE, payload = 'm' .. i }:wait().status == 'Ack' then
                acks = acks + 1
            end
            c:close()
        end
        return acks
        "#,
    )
    .await
    .unwrap();
    assert_eq!(acks, 50);
    assert_eq!(hermod_connectors::amqp::connections_opened(&uri), 1);
    q.delete().await;
}

#[tokio::test]
async fn close_then_publish_raises_client_was_closed() {
    let lua = common::lua();
    let err = common::run::<Value>(
        &lua,
        r#"
        local c = kumo.amqp.build_client('amqp://guest:guest@127.0.0.1:5672/%2f')
        local copy = c
        c:close()
        return copy:publish{ routing_key = 'nowhere', payload = 'x' }
        "#,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("client was closed"), "{err}");
}

#[tokio::test]
async fn build_client_to_a_closed_port_raises_naming_the_uri_without_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lua = common::lua();
    lua.globals()
        .set("URI", format!("amqp://guest:secret@127.0.0.1:{port}/%2f"))
        .unwrap();
    let err = common::run::<Value>(&lua, "return kumo.amqp.build_client(URI)")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

#[tokio::test]
async fn basic_publish_waits_for_the_confirm_and_delivers_properties() {
    let q = TestQueue::new("hermod_basic").await;
    let lua = common::lua();
    lua.globals().set("QUEUE", q.name.as_str()).unwrap();
    common::run::<()>(
        &lua,
        r#"
        kumo.amqp.basic_publish{
            routing_key = QUEUE, payload = 'hello', app_id = 'hermod', message_id = 'given-id',
            headers = { attempt = 3, note = 'n' }, priority = 1, timestamp = 1700000000,
            connection = { host = '127.0.0.1', vhost = '/', publish_timeout = '10s', heartbeat = 30 },
        }
        "#,
    )
    .await
    .unwrap();
    let (data, props) = q.get().await.expect("message in queue");
    assert_eq!(data, b"hello");
    assert_eq!(
        props.message_id().as_ref().map(|s| s.as_str()),
        Some("given-id")
    );
    assert_eq!(props.app_id().as_ref().map(|s| s.as_str()), Some("hermod"));
    let headers = props.headers().clone().unwrap();
    assert!(headers.inner().contains_key("attempt"));
    q.delete().await;
}

#[tokio::test]
async fn basic_publish_with_an_unknown_key_raises_naming_the_key() {
    let lua = common::lua();
    let err = common::run::<()>(
        &lua,
        "kumo.amqp.basic_publish{ routing_key = 'q', payload = 'x', colour = 'red', connection = { host = '127.0.0.1' } }",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("colour"), "{err}");
    assert!(err.contains("test.lua:1"), "{err}");
    let err = common::run::<()>(
        &lua,
        "kumo.amqp.basic_publish{ routing_key = 'q', payload = 'x', connection = { host = '127.0.0.1', hots = 1 } }",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("hots"), "{err}");
}

#[tokio::test]
async fn basic_publish_to_a_missing_exchange_raises_and_the_next_publish_still_works() {
    let q = TestQueue::new("hermod_recover").await;
    let lua = common::lua();
    lua.globals().set("QUEUE", q.name.as_str()).unwrap();
    lua.globals()
        .set("EXCHANGE", common::unique("missing_exchange"))
        .unwrap();
    let err: String = common::run(
        &lua,
        r#"
        local conn = { host = '127.0.0.1', heartbeat = 31, publish_timeout = '10s' }
        local ok, err = pcall(kumo.amqp.basic_publish, { routing_key = QUEUE, payload = 'a',
            exchange = EXCHANGE, connection = conn })
        assert(not ok)
        kumo.amqp.basic_publish{ routing_key = QUEUE, payload = 'b', connection = conn }
        return tostring(err)
        "#,
    )
    .await
    .unwrap();
    assert!(err.contains("exchange"), "{err}");
    let (data, _) = q.get().await.expect("second message in queue");
    assert_eq!(data, b"b");
    q.delete().await;
}
