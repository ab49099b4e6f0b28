//! RocksDB instances backing the spools: one instance per distinct spool
//! path, each holding the column families of the spools defined there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use crate::config::{SpoolDefinition, SpoolName};
use crate::error::SpoolError;

pub(crate) const DATA_CF: &str = "data";
pub(crate) const META_CF: &str = "meta";

/// Subdirectory of a spool path holding the RocksDB files.
const DB_DIR: &str = "db";
/// Subdirectory of the meta spool path receiving entries moved aside.
pub(crate) const CORRUPT_DIR: &str = "corrupt";

/// The opened spools. `data` and `meta` are the same instance when both
/// spools share a path, which makes a message's two writes one atomic batch.
pub(crate) struct Dbs {
    pub data: Arc<DB>,
    pub meta: Arc<DB>,
    pub shared: bool,
    pub meta_path: PathBuf,
    pub fsync: bool,
    /// Held by every group commit and by enumeration, so enumeration never
    /// sees the gap between a commit's data write and its meta write (which
    /// would look like orphaned data).
    pub commit_lock: parking_lot::Mutex<()>,
}

impl Dbs {
    pub fn open(defs: &[SpoolDefinition], fsync: bool) -> Result<Self, SpoolError> {
        if defs.is_empty() {
            return Err(SpoolError::Config("No spools have been defined".into()));
        }
        let data = find(defs, SpoolName::Data)?;
        let meta = find(defs, SpoolName::Meta)?;
        let shared = same_path(&data.path, &meta.path);
        let (data_db, meta_db) = if shared {
            let params = merge_params(&data.rocks_params, &meta.rocks_params)?;
            let db = Arc::new(open_one(&data.path, &params)?);
            (db.clone(), db)
        } else {
            (
                Arc::new(open_one(&data.path, &data.rocks_params)?),
                Arc::new(open_one(&meta.path, &meta.rocks_params)?),
            )
        };
        Ok(Self {
            data: data_db,
            meta: meta_db,
            shared,
            meta_path: meta.path.clone(),
            fsync,
            commit_lock: parking_lot::Mutex::new(()),
        })
    }

    pub fn corrupt_dir(&self) -> PathBuf {
        self.meta_path.join(CORRUPT_DIR)
    }
}

fn find(defs: &[SpoolDefinition], name: SpoolName) -> Result<&SpoolDefinition, SpoolError> {
    let mut it = defs.iter().filter(|d| d.name == name);
    let first = it.next().ok_or_else(|| {
        SpoolError::Config(format!(
            "the {0:?} spool is not defined; call kumo.define_spool{{name=\"{0}\", ...}}",
            name.as_str()
        ))
    })?;
    if it.next().is_some() {
        return Err(SpoolError::Config(format!(
            "the {:?} spool is defined more than once",
            name.as_str()
        )));
    }
    Ok(first)
}

fn same_path(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    // Different spellings of one directory must not open one DB twice.
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn merge_params(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, SpoolError> {
    let mut out = a.clone();
    for (k, v) in b {
        match out.get(k) {
            Some(existing) if existing != v => {
                return Err(SpoolError::Config(format!(
                    "data and meta spools share a path but set rocks_params.{k} to {existing:?} and {v:?}"
                )))
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(out)
}

fn params_string(params: &BTreeMap<String, String>) -> String {
    params.iter().map(|(k, v)| format!("{k}={v};")).collect()
}

/// `rocks_params` that RocksDB refuses, with RocksDB's reason.
#[derive(Debug, thiserror::Error)]
#[error("rocks_params: {0}")]
pub(crate) struct RocksParamsError(String);

/// `opts` with `params` applied.
fn with_params(
    opts: &mut Options,
    params: &BTreeMap<String, String>,
) -> Result<Options, RocksParamsError> {
    opts.get_options_from_string(params_string(params))
        .map_err(|e| RocksParamsError(e.into_string()))
}

/// Check option names and values without touching the disk, so a typo in
/// `rocks_params` fails at `kumo.define_spool` rather than at start-up.
pub(crate) fn validate_rocks_params(
    params: &BTreeMap<String, String>,
) -> Result<(), RocksParamsError> {
    if params.is_empty() {
        return Ok(());
    }
    with_params(&mut Options::default(), params).map(|_| ())
}

fn base_options(params: &BTreeMap<String, String>) -> Result<Options, SpoolError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Keep RocksDB's own info log from filling the spool disk.
    opts.set_keep_log_file_num(4);
    opts.set_max_log_file_size(16 << 20);
    // Point-in-time recovery stops at the first torn WAL record, so nothing
    // after a crash-damaged write is replayed out of order.
    opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
    opts.set_max_background_jobs(2);
    if params.is_empty() {
        return Ok(opts);
    }
    with_params(&mut opts, params).map_err(|e| SpoolError::Config(e.to_string()))
}

fn open_one(path: &Path, params: &BTreeMap<String, String>) -> Result<DB, SpoolError> {
    let db_path = path.join(DB_DIR);
    crate::dirs::create_dir_durably(&db_path)
        .map_err(|e| SpoolError::from_io(&format!("create {}", db_path.display()), e))?;
    let opts = base_options(params)?;
    // Open every family that exists, plus ours: a path that once held both
    // spools must still open after the policy splits them.
    let mut names: Vec<String> = DB::list_cf(&opts, &db_path).unwrap_or_default();
    for n in ["default", DATA_CF, META_CF] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    let cfs = names
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, opts.clone()));
    let db = DB::open_cf_descriptors(&opts, &db_path, cfs)
        .map_err(|e| SpoolError::from_rocks(&format!("open spool {}", db_path.display()), e))?;
    tracing::info!(path = %db_path.display(), "spool opened");
    Ok(db)
}

/// Look up a column family that `open_one` always creates.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, SpoolError> {
    db.cf_handle(name)
        .ok_or_else(|| SpoolError::Io(format!("column family {name} is missing")))
}
