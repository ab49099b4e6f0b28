//! A headless Chromium driven through chromedriver's W3C WebDriver HTTP API,
//! for the dashboard's end-to-end test: Debian's `chromium` and
//! `chromium-driver`, which scripts/services installs. The driver and the
//! browser run in their own process group, so dropping a [`Browser`] ends
//! both even when a test panics half-way.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::free_port;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// W3C's key for an element reference in a command's value.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
}

impl Browser {
    /// Start chromedriver on a free port and open a headless session of
    /// `width`×`height` pixels. Panics naming what to install when the
    /// binaries are missing: the test must not pass without a browser.
    pub async fn start(width: u32, height: u32) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: run scripts/services (it installs chromium and chromium-driver)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("building the WebDriver client");
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await
                .ok();
            if let Some(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready within 30s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--disable-gpu", "--no-proxy-server", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let v = browser
            .request(reqwest::Method::POST, "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("opening a Chromium session: {e}"));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"));
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    /// One WebDriver command; `Ok` holds the reply's `value`, `Err` the
    /// driver's error and message.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| format!("{path}: {e}"))?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{path}: {} {}",
                v["value"]["error"], v["value"]["message"]
            ))
        }
    }

    pub async fn goto(&self, url: &str) {
        self.request(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .unwrap_or_else(|e| panic!("loading {url}: {e}"));
    }

    async fn find(&self, css: &str) -> Result<String, String> {
        let v = self
            .request(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        v[ELEMENT_KEY]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no element reference in {v}"))
    }

    /// The rendered text of the first element `css` selects.
    pub async fn text(&self, css: &str) -> Result<String, String> {
        let id = self.find(css).await?;
        let v = self
            .request(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Click the first element `css` selects, as a user would.
    pub async fn click(&self, css: &str) -> Result<(), String> {
        let id = self.find(css).await?;
        self.request(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// Accept the `confirm()` the page has open.
    pub async fn accept_dialog(&self) -> Result<(), String> {
        self.request(reqwest::Method::POST, "/alert/accept", Some(json!({})))
            .await
            .map(drop)
    }

    /// Run `script` (a function body) in the page and return its value.
    pub async fn eval(&self, script: &str) -> Result<Value, String> {
        self.request(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The viewport as PNG bytes.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self
            .request(reqwest::Method::GET, "/screenshot", None)
            .await
            .unwrap_or_else(|e| panic!("taking a screenshot: {e}"));
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("the screenshot is base64")
    }

    /// End the session (chromedriver closes Chromium), then the driver.
    pub async fn quit(self) {
        let _ = self.request(reqwest::Method::DELETE, "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
