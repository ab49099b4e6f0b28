//! `kumo.configure_local_logs` and `kumo.configure_log_hook`: strict
//! parameter decoding, recorded as start-up items for the binary.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use mlua::{Lua, Value};
use serde::Deserialize;

use crate::record::RecordType;
use crate::template::{RecordTemplates, TemplateError};

const DEFAULT_MAX_FILE_SIZE: u64 = 1_000_000_000;
const DEFAULT_BACK_PRESSURE: usize = 128_000;

fn default_max_file_size() -> u64 {
    DEFAULT_MAX_FILE_SIZE
}

fn default_back_pressure() -> usize {
    DEFAULT_BACK_PRESSURE
}

fn default_true() -> bool {
    true
}

/// `per_record.<Type>` settings. `enable` and `template` are implemented;
/// `suffix`, `log_dir` and `segment_header` are refused with a clear error
/// rather than silently ignored (see `validate`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerRecordConfig {
    #[serde(default = "default_true")]
    pub enable: bool,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub segment_header: Option<String>,
}

impl Default for PerRecordConfig {
    fn default() -> Self {
        Self {
            enable: true,
            suffix: None,
            log_dir: None,
            template: None,
            segment_header: None,
        }
    }
}

/// Why a `kumo.configure_local_logs` or `kumo.configure_log_hook` table
/// is refused; `what` names the function.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{what}: {key} must not be empty")]
    Empty {
        what: &'static str,
        key: &'static str,
    },
    #[error("{what}: {key} must be greater than 0")]
    Zero {
        what: &'static str,
        key: &'static str,
    },
    #[error("{what}: compression_level {level} is out of range (1-21, or 0 for the default)")]
    CompressionLevel { what: &'static str, level: i32 },
    #[error("{what}: per_record.{kind}.{key} is not supported by this version")]
    Unsupported {
        what: &'static str,
        kind: RecordType,
        key: &'static str,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// Type-specific entry, else `Any`, else enabled.
pub(crate) fn is_enabled(
    per_record: &HashMap<RecordType, PerRecordConfig>,
    kind: RecordType,
) -> bool {
    per_record
        .get(&kind)
        .or_else(|| per_record.get(&RecordType::Any))
        .map(|p| p.enable)
        .unwrap_or(true)
}

fn validate_per_record(
    what: &'static str,
    per_record: &HashMap<RecordType, PerRecordConfig>,
) -> Result<(), ConfigError> {
    for (kind, p) in per_record {
        let unsupported = [
            ("suffix", p.suffix.is_some()),
            ("log_dir", p.log_dir.is_some()),
            ("segment_header", p.segment_header.is_some()),
        ];
        if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(ConfigError::Unsupported {
                what,
                kind: *kind,
                key,
            });
        }
    }
    // Compiled here too, so a broken template fails the configure call
    // itself and the error names the policy's file:line.
    RecordTemplates::compile(what, per_record)?;
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLogConfig {
    pub log_dir: PathBuf,
    #[serde(default = "default_max_file_size")]
    pub max_file_size: u64,
    #[serde(default, deserialize_with = "hermod_policy::duration::deserialize_opt")]
    pub max_segment_duration: Option<Duration>,
    /// 0 selects zstd's default level (3).
    #[serde(default)]
    pub compression_level: i32,
    #[serde(default = "default_back_pressure")]
    pub back_pressure: usize,
    #[serde(default)]
    pub meta: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub per_record: HashMap<RecordType, PerRecordConfig>,
    #[serde(default)]
    pub filter_event: Option<String>,
    /// Recorded for the listeners (ingress refusal when the disk fills);
    /// not enforced by the logger itself.
    #[serde(default)]
    pub min_free_space: Option<serde_json::Value>,
    #[serde(default)]
    pub min_free_inodes: Option<serde_json::Value>,
}

impl LocalLogConfig {
    /// A config with every default, for Rust callers and tests.
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        Self {
            log_dir: log_dir.into(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_segment_duration: None,
            compression_level: 0,
            back_pressure: DEFAULT_BACK_PRESSURE,
            meta: Vec::new(),
            headers: Vec::new(),
            per_record: HashMap::new(),
            filter_event: None,
            min_free_space: None,
            min_free_inodes: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        const WHAT: &str = "kumo.configure_local_logs";
        let empty = |key| ConfigError::Empty { what: WHAT, key };
        let zero = |key| ConfigError::Zero { what: WHAT, key };
        if self.log_dir.as_os_str().is_empty() {
            return Err(empty("log_dir"));
        }
        if !(0..=21).contains(&self.compression_level) {
            return Err(ConfigError::CompressionLevel {
                what: WHAT,
                level: self.compression_level,
            });
        }
        if self.max_file_size == 0 {
            return Err(zero("max_file_size"));
        }
        if self.back_pressure == 0 {
            return Err(zero("back_pressure"));
        }
        if self.max_segment_duration == Some(Duration::ZERO) {
            return Err(zero("max_segment_duration"));
        }
        if self.filter_event.as_deref() == Some("") {
            return Err(empty("filter_event"));
        }
        validate_per_record(WHAT, &self.per_record)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogHookConfig {
    pub name: String,
    #[serde(default = "default_back_pressure")]
    pub back_pressure: usize,
    #[serde(default)]
    pub meta: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub per_record: HashMap<RecordType, PerRecordConfig>,
    /// Read by the queue crate: skip the spool write for hook messages.
    #[serde(default)]
    pub deferred_spool: bool,
}

impl LogHookConfig {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            back_pressure: DEFAULT_BACK_PRESSURE,
            meta: Vec::new(),
            headers: Vec::new(),
            per_record: HashMap::new(),
            deferred_spool: false,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        const WHAT: &str = "kumo.configure_log_hook";
        if self.name.is_empty() {
            return Err(ConfigError::Empty {
                what: WHAT,
                key: "name",
            });
        }
        if self.back_pressure == 0 {
            return Err(ConfigError::Zero {
                what: WHAT,
                key: "back_pressure",
            });
        }
        validate_per_record(WHAT, &self.per_record)
    }
}

/// Decode and validate the `kumo.configure_local_logs` argument.
pub fn parse_local_logs(lua: &Lua, params: Value) -> mlua::Result<LocalLogConfig> {
    let cfg: LocalLogConfig =
        hermod_policy::config::from_lua_strict(lua, params, "kumo.configure_local_logs")?;
    cfg.validate()
        .map_err(|e| hermod_policy::errors::located(lua, e))?;
    Ok(cfg)
}

/// Decode and validate the `kumo.configure_log_hook` argument.
pub fn parse_log_hook(lua: &Lua, params: Value) -> mlua::Result<LogHookConfig> {
    let cfg: LogHookConfig =
        hermod_policy::config::from_lua_strict(lua, params, "kumo.configure_log_hook")?;
    cfg.validate()
        .map_err(|e| hermod_policy::errors::located(lua, e))?;
    Ok(cfg)
}

/// Hook names seen in this context; `pre_init` and `init` run in the same one.
#[derive(Default)]
struct HookNames(HashSet<String>);

/// Add `kumo.configure_local_logs`, `kumo.configure_log_hook` and
/// `kumo.configure_bounce_classifier`.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let kumo = hermod_policy::kumo_table(lua)?;
    kumo.set(
        "configure_local_logs",
        lua.create_function(|lua, params: Value| {
            let cfg = parse_local_logs(lua, params)?;
            hermod_policy::startup::push(lua, "kumo.configure_local_logs", cfg)
        })?,
    )?;
    kumo.set(
        "configure_log_hook",
        lua.create_function(|lua, params: Value| {
            let cfg = parse_log_hook(lua, params)?;
            let fresh = {
                if lua.app_data_ref::<HookNames>().is_none() {
                    lua.set_app_data(HookNames::default());
                }
                let mut names = lua
                    .app_data_mut::<HookNames>()
                    .ok_or_else(|| mlua::Error::runtime("log hook registry unavailable"))?;
                names.0.insert(cfg.name.clone())
            };
            if !fresh {
                return Err(hermod_policy::errors::located(
                    lua,
                    format!(
                        "kumo.configure_log_hook: a log hook named {:?} is already configured",
                        cfg.name
                    ),
                ));
            }
            hermod_policy::startup::push(lua, "kumo.configure_log_hook", cfg)
        })?,
    )?;
    kumo.set(
        "configure_bounce_classifier",
        lua.create_function(crate::bounce::configure)?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_local(lua: &Lua, src: &str) -> mlua::Result<LocalLogConfig> {
        let v: Value = lua.load(src).eval()?;
        parse_local_logs(lua, v)
    }

    #[test]
    fn local_logs_defaults_match_the_spec() {
        let lua = Lua::new();
        let c = eval_local(&lua, "return {log_dir='/tmp/x'}").unwrap();
        assert_eq!(c.max_file_size, 1_000_000_000);
        assert_eq!(c.back_pressure, 128_000);
        assert_eq!(c.compression_level, 0);
        assert!(c.max_segment_duration.is_none());
        assert!(c.meta.is_empty() && c.headers.is_empty() && c.per_record.is_empty());
    }

    #[test]
    fn local_logs_parse_every_core_key() {
        let lua = Lua::new();
        let c = eval_local(
            &lua,
            "return {log_dir='/tmp/x', max_file_size=10, max_segment_duration='5 minutes', \
             compression_level=9, back_pressure=7, meta={'queue','x_*'}, headers={'Subject'}, \
             per_record={Any={enable=false}, Delivery={enable=true}}, min_free_space='5%'}",
        )
        .unwrap();
        assert_eq!(c.max_segment_duration, Some(Duration::from_secs(300)));
        assert_eq!(c.meta, ["queue", "x_*"]);
        assert!(!is_enabled(&c.per_record, RecordType::Bounce));
        assert!(is_enabled(&c.per_record, RecordType::Delivery));
    }

    #[test]
    fn local_logs_unknown_key_is_an_error_naming_the_key() {
        let lua = Lua::new();
        let e = eval_local(&lua, "return {log_dir='/tmp/x', max_file_sise=10}").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("max_file_sise"), "{text}");
        assert!(text.contains("kumo.configure_local_logs"), "{text}");
    }

    #[test]
    fn local_logs_reject_out_of_range_compression_broken_templates_and_unsupported_keys() {
        let lua = Lua::new();
        let e = eval_local(&lua, "return {log_dir='/tmp/x', compression_level=30}").unwrap_err();
        assert!(e.to_string().contains("compression_level"), "{e}");
        let e = eval_local(
            &lua,
            "return {log_dir='/tmp/x', per_record={Bounce={template='{{ id '}}}",
        )
        .unwrap_err();
        assert!(e.to_string().contains("per_record.Bounce.template"), "{e}");
        let e = eval_local(
            &lua,
            "return {log_dir='/tmp/x', per_record={Bounce={suffix='.b'}}}",
        )
        .unwrap_err();
        assert!(e.to_string().contains("per_record.Bounce.suffix"), "{e}");
        let c = eval_local(
            &lua,
            "return {log_dir='/tmp/x', filter_event='keep', per_record={Bounce={template='{{ id }}'}}}",
        )
        .unwrap();
        assert_eq!(c.filter_event.as_deref(), Some("keep"));
    }

    #[test]
    fn log_hook_requires_a_name_and_rejects_unknown_keys() {
        let lua = Lua::new();
        let v: Value = lua.load("return {back_pressure=3}").eval().unwrap();
        assert!(parse_log_hook(&lua, v)
            .unwrap_err()
            .to_string()
            .contains("name"));
        let v: Value = lua.load("return {name='h', bogus=1}").eval().unwrap();
        assert!(parse_log_hook(&lua, v)
            .unwrap_err()
            .to_string()
            .contains("bogus"));
        let v: Value = lua
            .load("return {name='h', deferred_spool=true}")
            .eval()
            .unwrap();
        let c = parse_log_hook(&lua, v).unwrap();
        assert!(c.deferred_spool);
        assert_eq!(c.back_pressure, 128_000);
    }
}
