//! The operator verbs (`hermod suspend`, `bounce`, `queue-summary`, ...):
//! thin clients of the HTTP admin API, like KumoMTA's `kcli`. Each prints a
//! short human summary, or the server's JSON with `--json`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args};
use serde_json::{json, Value};

/// Where the server is and how to print; every verb has these.
#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The HTTP listener of the server.
    #[arg(long, env = "HERMOD_ENDPOINT", default_value = "http://127.0.0.1:8000")]
    pub endpoint: String,
    /// Print the server's JSON answer.
    #[arg(long)]
    pub json: bool,
    /// User for HTTP Basic authentication, needed where the server does not
    /// trust this host. The password is read from HERMOD_ADMIN_PASSWORD, so
    /// that it never appears in a process list or shell history.
    #[arg(long, env = "HERMOD_ADMIN_USER")]
    pub user: Option<String>,
}

/// Which scheduled queues a suspension or bounce applies to; at least one
/// criterion, or `--everything`, must be given so nothing is hit by accident.
#[derive(Args, Clone)]
#[command(group(ArgGroup::new("target").required(true).multiple(true)
    .args(["domain", "routing_domain", "campaign", "tenant", "queue", "everything"])))]
pub struct TargetArgs {
    /// The recipient domain to match.
    #[arg(long)]
    pub domain: Option<String>,
    /// The routing domain to match.
    #[arg(long)]
    pub routing_domain: Option<String>,
    /// The campaign to match.
    #[arg(long)]
    pub campaign: Option<String>,
    /// The tenant to match.
    #[arg(long)]
    pub tenant: Option<String>,
    /// An exact scheduled queue name (repeatable); replaces the other criteria.
    #[arg(long)]
    pub queue: Vec<String>,
    /// Every queue.
    #[arg(long)]
    pub everything: bool,
}

impl TargetArgs {
    pub(crate) fn to_json(&self) -> serde_json::Map<String, Value> {
        let mut o = serde_json::Map::new();
        for (k, v) in [
            ("domain", &self.domain),
            ("routing_domain", &self.routing_domain),
            ("campaign", &self.campaign),
            ("tenant", &self.tenant),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), json!(v));
            }
        }
        if !self.queue.is_empty() {
            o.insert("queue_names".into(), json!(self.queue));
        }
        o
    }
}

#[derive(Args)]
pub struct SuspendArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Why (shown in suspend-list and the server's log).
    #[arg(long)]
    pub reason: String,
    /// How long the suspension lasts.
    #[arg(long, default_value = "5m")]
    pub duration: String,
}

#[derive(Args)]
pub struct SuspendReadyArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The ready queue's name, as queue-summary lists it.
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub reason: String,
    #[arg(long, default_value = "5m")]
    pub duration: String,
}

#[derive(Args)]
pub struct BounceArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Logged in each message's AdminBounce record.
    #[arg(long)]
    pub reason: String,
    /// How long new matching messages keep being bounced.
    #[arg(long, default_value = "5m")]
    pub duration: String,
    /// Write no AdminBounce records.
    #[arg(long)]
    pub suppress_logging: bool,
}

#[derive(Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The id that suspend or bounce printed.
    #[arg(long)]
    pub id: String,
}

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The message's spool id.
    pub id: String,
    /// Include the message content.
    #[arg(long)]
    pub want_body: bool,
}

/// One admin API call's plumbing (also `hermod top`'s reads of `/metrics`).
pub(crate) struct Api {
    client: reqwest::Client,
    base: String,
    /// User and password for HTTP Basic authentication.
    basic: Option<(String, String)>,
}

impl Api {
    pub(crate) fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        Self::connect(
            &args.endpoint,
            args.user.as_deref(),
            std::time::Duration::from_secs(60),
        )
    }

    /// A client for `endpoint`, authenticating as `user` (password from
    /// HERMOD_ADMIN_PASSWORD) when given; each request gives up after `timeout`.
    pub(crate) fn connect(
        endpoint: &str,
        user: Option<&str>,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Self> {
        // reqwest is built without a default TLS provider; https endpoints need one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("building the HTTP client")?;
        let basic = match user {
            None => None,
            Some(user) => match std::env::var("HERMOD_ADMIN_PASSWORD") {
                Ok(password) => Some((user.to_string(), password)),
                Err(_) => bail!("--user {user} needs the password in HERMOD_ADMIN_PASSWORD"),
            },
        };
        Ok(Self {
            client,
            base: endpoint.trim_end_matches('/').to_string(),
            basic,
        })
    }

    /// GET `path` and return the body as text; a non-2xx answer is an error.
    pub(crate) async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.client.get(&url);
        if let Some((user, password)) = &self.basic {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req.send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer to GET {url}"))?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {}", text.trim());
        }
        Ok(text)
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.call_with(method, path, &[], body).await
    }

    /// [`Api::call`] with query parameters, encoded as the URL needs.
    pub(crate) async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .with_context(|| format!("--endpoint {:?} is not a URL", self.base))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self.client.request(method.clone(), url.clone());
        if let Some((user, password)) = &self.basic {
            req = req.basic_auth(user, Some(password));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        if !status.is_success() {
            bail!("{method} {url}: {status}: {}", text.trim());
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: answer is not JSON"))
    }
}

pub(crate) fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

pub(crate) fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Criteria of a listed rule, as `domain=x tenant=y`.
fn criteria_text(v: &Value) -> String {
    let mut parts: Vec<String> = ["domain", "routing_domain", "campaign", "tenant"]
        .iter()
        .filter_map(|k| v[*k].as_str().map(|x| format!("{k}={x}")))
        .collect();
    if let Some(q) = v["queue_names"].as_array() {
        let names: Vec<&str> = q.iter().filter_map(Value::as_str).collect();
        parts.push(format!("queues={}", names.join(",")));
    }
    if parts.is_empty() {
        "everything".into()
    } else {
        parts.join(" ")
    }
}

pub async fn suspend(a: SuspendArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.api)?;
    let mut body = a.target.to_json();
    body.insert("reason".into(), json!(a.reason));
    body.insert("duration".into(), json!(a.duration));
    let v = api
        .call(
            reqwest::Method::POST,
            "/api/admin/suspend/v1",
            Some(Value::Object(body)),
        )
        .await?;
    if a.api.json {
        print_json(&v);
    } else {
        println!("suspended: id {}", s(&v["id"]));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn suspend_ready(a: SuspendReadyArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.api)?;
    let body = json!({"name": a.name, "reason": a.reason, "duration": a.duration});
    let v = api
        .call(
            reqwest::Method::POST,
            "/api/admin/suspend-ready-q/v1",
            Some(body),
        )
        .await?;
    if a.api.json {
        print_json(&v);
    } else {
        println!("ready queue suspended: id {}", s(&v["id"]));
    }
    Ok(ExitCode::SUCCESS)
}

/// `suspend-list`: both kinds of suspension.
pub async fn suspend_list(a: ApiArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a)?;
    let sched = api
        .call(reqwest::Method::GET, "/api/admin/suspend/v1", None)
        .await?;
    let ready = api
        .call(reqwest::Method::GET, "/api/admin/suspend-ready-q/v1", None)
        .await?;
    if a.json {
        print_json(&json!({"scheduled": sched, "ready": ready}));
        return Ok(ExitCode::SUCCESS);
    }
    let (sched, ready) = (
        sched.as_array().cloned().unwrap_or_default(),
        ready.as_array().cloned().unwrap_or_default(),
    );
    if sched.is_empty() && ready.is_empty() {
        println!("no suspensions");
    }
    for e in sched {
        println!(
            "{}  scheduled  {}  left {}  reason: {}",
            s(&e["id"]),
            criteria_text(&e),
            s(&e["duration"]),
            s(&e["reason"])
        );
    }
    for e in ready {
        println!(
            "{}  ready  {}  left {}  reason: {}",
            s(&e["id"]),
            s(&e["name"]),
            s(&e["duration"]),
            s(&e["reason"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `suspend-cancel`: the id may be of either kind of suspension.
pub async fn suspend_cancel(a: CancelArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.api)?;
    let body = json!({ "id": a.id });
    let sched = api
        .call(
            reqwest::Method::DELETE,
            "/api/admin/suspend/v1",
            Some(body.clone()),
        )
        .await;
    let result = match sched {
        Ok(_) => Ok(()),
        Err(first) => api
            .call(
                reqwest::Method::DELETE,
                "/api/admin/suspend-ready-q/v1",
                Some(body),
            )
            .await
            .map(|_| ())
            .map_err(|_| first),
    };
    result?;
    if a.api.json {
        print_json(&json!({"cancelled": a.id}));
    } else {
        println!("suspension {} cancelled", a.id);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn bounce(a: BounceArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.api)?;
    let mut body = a.target.to_json();
    body.insert("reason".into(), json!(a.reason));
    body.insert("duration".into(), json!(a.duration));
    body.insert("suppress_logging".into(), json!(a.suppress_logging));
    let pb = crate::admin_queue_cli::spinner("starting the bounce");
    let v = api
        .call(
            reqwest::Method::POST,
            "/api/admin/bounce/v1",
            Some(Value::Object(body)),
        )
        .await;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let v = v?;
    if a.api.json {
        print_json(&v);
    } else {
        println!(
            "bounce started: id {} (queued messages are bounced in the background; see bounce-list)",
            s(&v["id"])
        );
        let matched = v["matched"].as_u64().unwrap_or(0);
        let f = crate::admin_queue_cli::Follow {
            list: "/api/admin/bounce/v1",
            count: "total_bounced",
            gone_means_done: false,
            verb: "bounced",
        };
        crate::admin_queue_cli::follow(&api, f, s(&v["id"]), matched).await?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn bounce_list(a: ApiArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a)?;
    let v = api
        .call(reqwest::Method::GET, "/api/admin/bounce/v1", None)
        .await?;
    if a.json {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no bounces");
    }
    for e in list {
        println!(
            "{}  {}  bounced {}  left {}  reason: {}",
            s(&e["id"]),
            criteria_text(&e),
            e["total_bounced"].as_u64().unwrap_or(0),
            s(&e["duration"]),
            s(&e["reason"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn bounce_cancel(a: CancelArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.api)?;
    api.call(
        reqwest::Method::DELETE,
        "/api/admin/bounce/v1",
        Some(json!({ "id": a.id })),
    )
    .await?;
    if a.api.json {
        print_json(&json!({"cancelled": a.id}));
    } else {
        println!("bounce {} cancelled", a.id);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn inspect_message(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.api)?;
    let want_body = if a.want_body { "true" } else { "false" };
    let query = [("id", a.id.as_str()), ("want_body", want_body)];
    let v = api
        .call_with(
            reqwest::Method::GET,
            "/api/admin/inspect-message/v1",
            &query,
            None,
        )
        .await?;
    // The message is the answer, so both forms print the JSON.
    print_json(&v);
    Ok(ExitCode::SUCCESS)
}

/// `queue-summary`: ready queues with their depth, sessions and conditions,
/// then scheduled queues with the messages waiting for a retry (from
/// `/metrics.json`, refreshed every second).
pub async fn queue_summary(a: ApiArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a)?;
    let metrics = api
        .call(reqwest::Method::GET, "/metrics.json", None)
        .await?;
    let states = api
        .call(reqwest::Method::GET, "/api/admin/ready-q-states/v1", None)
        .await?;
    let by_label = |metric: &str| -> serde_json::Map<String, Value> {
        // {"value": {"<label>": {"<name>": n}}}: one label per family.
        metrics[metric]["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let ready = by_label("ready_count");
    let conns = by_label("connection_count");
    let scheduled = by_label("scheduled_count");
    let states = states["states_by_ready_queue"].clone();
    if a.json {
        print_json(&json!({
            "ready_count": ready, "connection_count": conns,
            "scheduled_count": scheduled, "states_by_ready_queue": states,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<60} {:>8} {:>6}  STATE",
        "READY QUEUE", "QUEUED", "CONNS"
    );
    for (service, n) in &ready {
        // Gauges are labelled `<protocol>:<ready queue name>`.
        let name = service.split_once(':').map_or(service.as_str(), |x| x.1);
        let state = states[name]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k} ({})", s(&v["context"])))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let c = conns.get(service).and_then(Value::as_i64).unwrap_or(0);
        println!(
            "{name:<60} {:>8} {c:>6}  {}",
            n.as_i64().unwrap_or(0),
            if state.is_empty() { "active" } else { &state }
        );
    }
    println!();
    println!("{:<60} {:>8}", "SCHEDULED QUEUE", "WAITING");
    for (q, n) in &scheduled {
        println!("{q:<60} {:>8}", n.as_i64().unwrap_or(0));
    }
    Ok(ExitCode::SUCCESS)
}
