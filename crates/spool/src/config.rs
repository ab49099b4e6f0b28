//! `kumo.define_spool{...}`: strict decoding and validation of a spool
//! definition, recorded as a start-up item for the binary to open.
//!
//! Hermod differences from KumoMTA, on purpose:
//! - `kind = "LocalDisk"` and `kind = "RocksDB"` are both accepted and both
//!   are stored in RocksDB: one engine keeps the group-commit and recovery
//!   logic in one place, and the on-disk layout is internal to Hermod.
//! - `flush` is accepted for compatibility but ignored: every write is
//!   fsynced (one WAL fsync per group commit), because a 250 must mean the
//!   message is on stable storage.
//! - `rocks_params` is applied to the RocksDB options of the spool's path.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mlua::{Lua, Value};
use serde::Deserialize;

use crate::db::RocksParamsError;

/// Which of the two spools a definition configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpoolName {
    /// Message bytes.
    Data,
    /// Envelope and metadata JSON.
    Meta,
}

impl SpoolName {
    pub fn as_str(&self) -> &'static str {
        match self {
            SpoolName::Data => "data",
            SpoolName::Meta => "meta",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpoolKind {
    #[default]
    LocalDisk,
    RocksDB,
}

/// A minimum of free space or free inodes below which ingress is refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Percentage of the file system's total (0..=100).
    Percent(f64),
    /// Absolute bytes (space) or inodes.
    Absolute(u64),
}

impl Threshold {
    /// KumoMTA's default for both space and inodes.
    pub const DEFAULT: Threshold = Threshold::Percent(10.0);

    /// True when `free` out of `total` satisfies the minimum.
    pub fn is_satisfied(&self, free: u64, total: u64) -> bool {
        match *self {
            Threshold::Absolute(min) => free >= min,
            // A file system that reports no total (some report 0 inodes)
            // cannot be judged by percentage; do not refuse mail for it.
            Threshold::Percent(_) if total == 0 => true,
            Threshold::Percent(p) => (free as f64) * 100.0 >= p * (total as f64),
        }
    }

    fn parse(field: &'static str, raw: &RawThreshold) -> Result<Self, DefinitionError> {
        match raw {
            RawThreshold::Number(n) => {
                if n.is_finite() && *n >= 0.0 && n.fract() == 0.0 {
                    Ok(Threshold::Absolute(*n as u64))
                } else {
                    Err(DefinitionError::ThresholdNumber { field, got: *n })
                }
            }
            RawThreshold::Text(s) => {
                let t = s.trim();
                if let Some(p) = t.strip_suffix('%') {
                    match p.trim().parse::<f64>() {
                        Ok(v) if (0.0..=100.0).contains(&v) => Ok(Threshold::Percent(v)),
                        _ => Err(DefinitionError::ThresholdPercent {
                            field,
                            got: s.clone(),
                        }),
                    }
                } else {
                    t.parse::<u64>().map(Threshold::Absolute).map_err(|_| {
                        DefinitionError::ThresholdText {
                            field,
                            got: s.clone(),
                        }
                    })
                }
            }
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Percent(p) => write!(f, "{p}%"),
            Threshold::Absolute(n) => write!(f, "{n}"),
        }
    }
}

/// Why a `kumo.define_spool` table is refused; the caller adds the
/// function name and the policy's `file:line`.
#[derive(Debug, thiserror::Error)]
enum DefinitionError {
    #[error("name must be \"data\" or \"meta\", got {0:?}")]
    Name(String),
    #[error("path must not be empty")]
    EmptyPath,
    #[error("kind must be \"LocalDisk\" or \"RocksDB\", got {0:?}")]
    Kind(String),
    #[error(transparent)]
    RocksParams(#[from] RocksParamsError),
    #[error("{field} must be a whole non-negative number or a percentage like \"10%\", got {got}")]
    ThresholdNumber { field: &'static str, got: f64 },
    #[error(
        "{field} must be a whole non-negative number or a percentage like \"10%\", got {got:?}"
    )]
    ThresholdText { field: &'static str, got: String },
    #[error("{field} must be a percentage between 0% and 100%, got {got:?}")]
    ThresholdPercent { field: &'static str, got: String },
}

/// One validated `kumo.define_spool` call.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolDefinition {
    pub name: SpoolName,
    pub path: PathBuf,
    pub kind: SpoolKind,
    /// Accepted for compatibility; Hermod always fsyncs.
    pub flush: bool,
    /// RocksDB option names and values, e.g. `{ max_background_jobs = 4 }`.
    pub rocks_params: BTreeMap<String, String>,
    pub min_free_space: Threshold,
    pub min_free_inodes: Threshold,
}

impl SpoolDefinition {
    /// A definition with Hermod's defaults, as used when a policy defines no spool.
    pub fn new(name: SpoolName, path: impl Into<PathBuf>) -> Self {
        Self {
            name,
            path: path.into(),
            kind: SpoolKind::LocalDisk,
            flush: false,
            rocks_params: BTreeMap::new(),
            min_free_space: Threshold::DEFAULT,
            min_free_inodes: Threshold::DEFAULT,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawThreshold {
    Number(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawParam {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// The parameter table exactly as a policy writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: String,
    path: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    flush: bool,
    #[serde(default)]
    rocks_params: BTreeMap<String, RawParam>,
    #[serde(default)]
    min_free_space: Option<RawThreshold>,
    #[serde(default)]
    min_free_inodes: Option<RawThreshold>,
}

impl RawDefinition {
    fn validate(self) -> Result<SpoolDefinition, DefinitionError> {
        let name = match self.name.as_str() {
            "data" => SpoolName::Data,
            "meta" => SpoolName::Meta,
            _ => return Err(DefinitionError::Name(self.name)),
        };
        if self.path.trim().is_empty() {
            return Err(DefinitionError::EmptyPath);
        }
        let kind = match self.kind.as_deref() {
            None | Some("LocalDisk") => SpoolKind::LocalDisk,
            Some("RocksDB") => SpoolKind::RocksDB,
            Some(other) => return Err(DefinitionError::Kind(other.to_string())),
        };
        let rocks_params: BTreeMap<String, String> = self
            .rocks_params
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    RawParam::Bool(b) => b.to_string(),
                    RawParam::Int(i) => i.to_string(),
                    RawParam::Float(f) => f.to_string(),
                    RawParam::Text(s) => s,
                };
                (k, v)
            })
            .collect();
        crate::db::validate_rocks_params(&rocks_params)?;
        let min_free_space = match &self.min_free_space {
            Some(raw) => Threshold::parse("min_free_space", raw)?,
            None => Threshold::DEFAULT,
        };
        let min_free_inodes = match &self.min_free_inodes {
            Some(raw) => Threshold::parse("min_free_inodes", raw)?,
            None => Threshold::DEFAULT,
        };
        Ok(SpoolDefinition {
            name,
            path: PathBuf::from(self.path),
            kind,
            flush: self.flush,
            rocks_params,
            min_free_space,
            min_free_inodes,
        })
    }
}

const WHAT: &str = "kumo.define_spool";

/// Decode and validate the parameter table of `kumo.define_spool`; errors
/// carry the caller's `file:line` and name the offending key.
pub fn parse_definition(lua: &Lua, value: Value) -> mlua::Result<SpoolDefinition> {
    let raw: RawDefinition = hermod_policy::config::from_lua_strict(lua, value, WHAT)?;
    raw.validate()
        .map_err(|e| hermod_policy::errors::located(lua, format!("{WHAT}: {e}")))
}

/// Add `kumo.define_spool` to the context's `kumo` table.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let kumo = hermod_policy::kumo_table(lua)?;
    let f = lua.create_function(|lua, params: Value| {
        let def = parse_definition(lua, params)?;
        // Nothing is created here, so validation mode (`hermod check`)
        // needs no special case: the binary opens the spool after `init`.
        hermod_policy::startup::push(lua, WHAT, def)
    })?;
    kumo.set("define_spool", f)
}
