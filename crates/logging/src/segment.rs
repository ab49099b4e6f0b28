//! Local log segments: one zstd stream of JSON lines per file, written by a
//! dedicated thread so compression never runs on the async workers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::record::LogRecord;
use crate::template::RecordTemplates;
use crate::LogError;

/// How often buffered compressed data is pushed to the file (so `logs tail
/// --follow` sees recent records) and segment age is checked.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Records taken from the channel per write batch.
/// How long the writer lets records accumulate between drains.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(2);
const BATCH: usize = 1024;

pub(crate) enum Command {
    Record(Box<LogRecord>),
    /// A record already serialised as its JSON line (by the log hook that
    /// needed the same record): written as is, not serialised twice.
    Line(bytes::Bytes),
    Tick,
    Shutdown(oneshot::Sender<()>),
}

pub(crate) struct SegmentSettings {
    pub dir: PathBuf,
    pub level: i32,
    pub max_file_size: u64,
    pub max_age: Option<Duration>,
    /// Rendered here, on the writer thread, rather than on the async workers.
    pub templates: RecordTemplates,
}

struct OpenSegment {
    path: PathBuf,
    encoder: zstd::stream::write::Encoder<'static, BufWriter<File>>,
    written: u64,
    opened: Instant,
    dirty: bool,
}

struct SegmentWriter {
    settings: SegmentSettings,
    current: Option<OpenSegment>,
}

/// Remove every write permission bit: read-only means "complete" to readers.
pub(crate) fn mark_read_only(path: &Path) -> io::Result<()> {
    let mut perms = fs::metadata(path)?.permissions();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        perms.set_mode(perms.mode() & !0o222);
    }
    #[cfg(not(unix))]
    perms.set_readonly(true);
    fs::set_permissions(path, perms)
}

/// Whether any write bit is set (we may run as root, so test the mode bits).
pub(crate) fn is_writable(meta: &fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o222 != 0
    }
    #[cfg(not(unix))]
    !meta.permissions().readonly()
}

/// Prepare a log directory: create it and seal segments left by a previous run.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), LogError> {
    let io_err = |source| LogError::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(io_err)?;
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let path = entry.path();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file {
            if let Err(e) = mark_read_only(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot mark old log segment read-only");
            }
        }
    }
    Ok(())
}

impl SegmentWriter {
    fn open(&mut self) -> io::Result<&mut OpenSegment> {
        if self.current.is_none() {
            let mut now = Utc::now();
            // Two segments opened within one clock tick must not share a name.
            let (path, file) = loop {
                let name = now.format("%Y%m%d-%H%M%S%.9f").to_string();
                let path = self.settings.dir.join(name);
                match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(f) => break (path, f),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        now += chrono::Duration::nanoseconds(1);
                    }
                    Err(e) => return Err(e),
                }
            };
            let encoder =
                zstd::stream::write::Encoder::new(BufWriter::new(file), self.settings.level)?;
            self.current = Some(OpenSegment {
                path,
                encoder,
                written: 0,
                opened: Instant::now(),
                dirty: false,
            });
        }
        self.current
            .as_mut()
            .ok_or_else(|| io::Error::other("segment vanished after opening"))
    }

    fn close(&mut self) {
        let Some(seg) = self.current.take() else {
            return;
        };
        let result = seg
            .encoder
            .finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all());
        if let Err(e) = result {
            tracing::error!(path = %seg.path.display(), error = %e, "failed to finish log segment");
        }
        if let Err(e) = mark_read_only(&seg.path) {
            tracing::error!(path = %seg.path.display(), error = %e, "failed to mark log segment read-only");
        }
    }

    fn expired(&self) -> bool {
        match (&self.current, self.settings.max_age) {
            (Some(seg), Some(age)) => seg.opened.elapsed() >= age,
            _ => false,
        }
    }

    fn write_record(&mut self, record: &LogRecord) {
        let line = match self.settings.templates.render(record) {
            Some(Ok(text)) => Ok(bytes::Bytes::from(text)),
            Some(Err(e)) => {
                // The record is still worth keeping; the operator sees why it is JSON.
                tracing::error!(id = %record.id, error = %e, "log template failed; writing the JSON record instead");
                record.to_json_line().map(|l| l.line().clone())
            }
            None => record.to_json_line().map(|l| l.line().clone()),
        };
        match line {
            Ok(l) => self.write(&l),
            Err(e) => tracing::error!(id = %record.id, error = %e, "cannot serialise log record"),
        }
    }

    fn write(&mut self, line: &[u8]) {
        if self.expired() {
            self.close();
        }
        let max = self.settings.max_file_size;
        let result = self.open().and_then(|seg| {
            seg.encoder.write_all(line)?;
            seg.written += line.len() as u64;
            seg.dirty = true;
            Ok(seg.written >= max)
        });
        match result {
            Ok(true) => self.close(),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(dir = %self.settings.dir.display(), error = %e,
                    "failed to write log record; starting a new segment");
                self.close();
            }
        }
    }

    fn tick(&mut self) {
        if self.expired() {
            self.close();
            return;
        }
        if let Some(seg) = self.current.as_mut().filter(|s| s.dirty) {
            match seg.encoder.flush() {
                Ok(()) => seg.dirty = false,
                Err(e) => {
                    tracing::error!(path = %seg.path.display(), error = %e, "failed to flush log segment");
                    self.close();
                }
            }
        }
    }
}

/// Start the writer thread and its flush ticker; returns the sending side.
pub(crate) fn spawn_writer(
    settings: SegmentSettings,
    capacity: usize,
) -> Result<mpsc::Sender<Command>, LogError> {
    let (tx, mut rx) = mpsc::channel::<Command>(capacity);
    let dir = settings.dir.clone();
    let name = format!(
        "hermod-log-{}",
        dir.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let mut writer = SegmentWriter {
        settings,
        current: None,
    };
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let mut done: Option<oneshot::Sender<()>> = None;
            'outer: while let Some(first) = rx.blocking_recv() {
                batch.push(first);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                let small = batch.len() < BATCH;
                for cmd in batch.drain(..) {
                    match cmd {
                        Command::Record(r) => writer.write_record(&r),
                        Command::Line(l) => writer.write(&l),
                        Command::Tick => writer.tick(),
                        Command::Shutdown(ack) => {
                            done = Some(ack);
                            break 'outer;
                        }
                    }
                }
                if small {
                    // Let records accumulate for a moment instead of parking
                    // on the channel: a parked receiver makes every sender
                    // pay a thread wake-up, which dominated CPU under load.
                    // Records are only buffered in memory here, so nothing
                    // waits on this but the next flush.
                    std::thread::sleep(COALESCE);
                }
            }
            writer.close();
            // Later senders see a closed channel instead of waiting forever.
            drop(rx);
            if let Some(ack) = done {
                let _ = ack.send(());
            }
        })
        .map_err(|source| LogError::Io { path: dir, source })?;

    // Weak, so dropping every Logger still closes the channel and lets the
    // writer finish its segment.
    let ticker = tx.downgrade();
    std::thread::Builder::new()
        .name(format!("{name}-tick"))
        .spawn(move || loop {
            std::thread::sleep(FLUSH_INTERVAL);
            let Some(tx) = ticker.upgrade() else {
                break;
            };
            // A full channel means the writer is busy and will tick soon anyway.
            if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Command::Tick) {
                break;
            }
        })
        .map_err(|source| LogError::Io {
            path: PathBuf::from(name),
            source,
        })?;
    Ok(tx)
}
