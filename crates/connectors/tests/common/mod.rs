//! Shared test helpers: a Lua state with `kumo` and the connectors
//! registered, and unique names so tests never share broker state.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mlua::{FromLuaMulti, Lua, Table};

/// A Lua state with an empty `kumo` module and every connector registered.
pub fn lua() -> Lua {
    let lua = Lua::new();
    let loaded: Table = lua
        .globals()
        .get::<Table>("package")
        .unwrap()
        .get("loaded")
        .unwrap();
    let kumo = lua.create_table().unwrap();
    loaded.set("kumo", kumo.clone()).unwrap();
    lua.globals().set("kumo", kumo).unwrap();
    hermod_connectors::register_all(&lua).unwrap();
    lua
}

/// Run a chunk named `test.lua`, bounded in time.
pub async fn run<R: FromLuaMulti>(lua: &Lua, src: &str) -> mlua::Result<R> {
    tokio::time::timeout(
        Duration::from_secs(30),
        lua.load(src).set_name("@test.lua").call_async::<R>(()),
    )
    .await
    .expect("lua chunk did not finish within 30s")
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free loopback port below Linux's ephemeral range (32768 and up), so an outgoing
/// connection of another test cannot take it before the server binds it.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = std::process::id().wrapping_mul(7) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let port = (LOW + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOW} and {}", LOW + SPAN)
}

/// A `nats-server` of one test (Debian's, as scripts/services installs it), with its own
/// client and monitoring ports and extra flags such as credentials; killed on drop.
pub struct PrivateNats {
    child: std::process::Child,
    pub port: u16,
    pub monitor: u16,
}

impl PrivateNats {
    pub fn start(flags: &[&str]) -> PrivateNats {
        let port = free_port();
        let monitor = free_port();
        let child = std::process::Command::new("/usr/sbin/nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string()])
            .args(flags)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawning /usr/sbin/nats-server");
        let server = PrivateNats {
            child,
            port,
            monitor,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", monitor)).is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "private nats-server did not listen on {port}/{monitor} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// GET a monitoring endpoint (`/connz?auth=1`, ...) and parse its JSON.
    pub fn monitor_json(&self, path: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.monitor)).expect("monitor");
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("monitor request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("monitor reply");
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("monitor {path}: {e}: {text}"))
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
