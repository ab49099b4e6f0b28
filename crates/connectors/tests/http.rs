//! `kumo.http` against a tiny HTTP/1.1 server on a loopback port.

mod common;

use mlua::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serve `response` to every connection; return the base URL and a channel
/// carrying each raw request received.
async fn server(response: &'static str) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read headers, then Content-Length bytes of body.
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let _ = tx.send(text);
                            break;
                        }
                    }
                }
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), rx)
}

#[tokio::test]
async fn response_exposes_status_headers_and_a_body_readable_once() {
    let (base, mut requests) = server(
        "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-Thing: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    let lua = common::lua();
    lua.globals().set("URL", format!("{base}/hook")).unwrap();
    let (code, reason, success, ctype, len, body, still_success, err): (
        u16,
        String,
        bool,
        String,
        u64,
        String,
        bool,
        String,
    ) = common::run(
        &lua,
        r#"
        local client = kumo.http.build_client{ user_agent = 'hermod-test', timeout = '5s' }
        local resp = client:post(URL):header('X-Policy', 'p'):body('{"a":1}'):timeout(5):send()
        local h = resp:headers()
        local code, reason, ok = resp:status_code(), resp:status_reason(), resp:status_is_success()
        local ctype, len = h['Content-Type'], resp:content_length()
        local body = resp:text()
        local _, err = pcall(function() return resp:text() end)
        return code, reason, ok, ctype, len, body, resp:status_is_success(), tostring(err)
        "#,
    )
    .await
    .unwrap();
    assert_eq!((code, reason.as_str(), success), (201, "Created", true));
    assert_eq!(ctype, "text/plain");
    assert_eq!(len, 5);
    assert_eq!(body, "hello");
    assert!(still_success);
    assert!(err.contains("broken response wrapper"), "{err}");
    let req = requests.recv().await.unwrap();
    assert!(req.starts_with("POST /hook HTTP/1.1"), "{req}");
    assert!(req.to_ascii_lowercase().contains("x-policy: p"), "{req}");
    assert!(
        req.to_ascii_lowercase().contains("user-agent: hermod-test"),
        "{req}"
    );
    assert!(req.ends_with("{\"a\":1}"), "{req}");
}

#[tokio::test]
async fn error_statuses_are_not_errors_and_auth_and_forms_are_sent() {
    let (base, mut requests) = server(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let lua = common::lua();
    lua.globals().set("URL", base).unwrap();
    let (code, server_error, reused): (u16, bool, String) = common::run(
        &lua,
        r#"
        local client = kumo.http.build_client{}
        local req = client:put(URL .. '/x'):basic_auth('user', 'pw'):form_url_encoded{ a = 'b c' }
        local resp = req:send()
        local _, err = pcall(function() return req:send() end)
        return resp:status_code(), resp:status_is_server_error(), tostring(err)
        "#,
    )
    .await
    .unwrap();
    assert_eq!((code, server_error), (503, true));
    assert!(reused.contains("broken request builder"), "{reused}");
    let req = requests.recv().await.unwrap();
    assert!(req.starts_with("PUT /x"), "{req}");
    assert!(req.contains("Basic dXNlcjpwdw=="), "{req}");
    assert!(req.ends_with("a=b+c"), "{req}");
}

#[tokio::test]
async fn bytes_returns_the_raw_body_and_bearer_auth_is_sent() {
    let (base, mut requests) =
        server("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n\x01\x02\x03")
            .await;
    let lua = common::lua();
    lua.globals().set("URL", base).unwrap();
    let body: mlua::String = common::run(
        &lua,
        "return kumo.http.build_client{}:get(URL):bearer_auth('tok'):send():bytes()",
    )
    .await
    .unwrap();
    assert_eq!(body.as_bytes().as_ref(), b"\x01\x02\x03");
    let req = requests.recv().await.unwrap();
    assert!(req.contains("Bearer tok"), "{req}");
}

#[tokio::test]
async fn connection_refused_raises_naming_the_url_and_close_then_get_raises() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lua = common::lua();
    lua.globals()
        .set("URL", format!("http://127.0.0.1:{port}/"))
        .unwrap();
    let err = common::run::<Value>(
        &lua,
        "local r = kumo.http.build_client{ timeout = 5 }:get(URL):send(); return r",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("test.lua:1"), "{err}");
    let err = common::run::<Value>(
        &lua,
        "local c = kumo.http.build_client{}; c:close(); return c:get(URL)",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("client was closed"), "{err}");
}
