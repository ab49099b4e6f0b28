//! `hermod logs tail`: read local log segments, including the one still
//! being written (a zstd stream without its end), and print records.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde::Deserialize;
use zstd::stream::raw::{Decoder, Operation};

use crate::record::{LogRecord, RecordType};
use crate::segment::is_writable;
use crate::LogError;

const POLL_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct TailOptions {
    pub log_dir: PathBuf,
    /// Keep polling for new records and new segments.
    pub follow: bool,
    /// Only these types; empty = all.
    pub types: Vec<RecordType>,
    /// Only records whose timestamp is at most this old.
    pub since: Option<Duration>,
    /// Print the raw JSON lines instead of one-line summaries.
    pub json: bool,
}

/// Incremental decoder for one segment: feeds whatever bytes the file has
/// gained since the last call, so a partially written stream yields every
/// complete line without being treated as an error.
struct SegmentReader {
    path: PathBuf,
    file: File,
    offset: u64,
    decoder: Decoder<'static>,
    partial: Vec<u8>,
    broken: bool,
}

impl SegmentReader {
    fn open(path: PathBuf) -> io::Result<Self> {
        Ok(Self {
            file: File::open(&path)?,
            path,
            offset: 0,
            decoder: Decoder::new()?,
            partial: Vec::new(),
            broken: false,
        })
    }

    /// Complete lines decoded from the bytes added since the previous call.
    fn read_available(&mut self) -> io::Result<Vec<Vec<u8>>> {
        if self.broken {
            return Ok(Vec::new());
        }
        self.file.seek(SeekFrom::Start(self.offset))?;
        let mut input = Vec::new();
        self.file.read_to_end(&mut input)?;
        self.offset += input.len() as u64;

        let mut out = vec![0u8; 128 * 1024];
        let mut pos = 0;
        loop {
            let status = match self.decoder.run_on_buffers(&input[pos..], &mut out) {
                Ok(s) => s,
                Err(e) => {
                    // Keep what decoded cleanly; a damaged segment must not stop the tail.
                    tracing::warn!(path = %self.path.display(), error = %e, "corrupt log segment; skipping the rest of it");
                    self.broken = true;
                    break;
                }
            };
            pos += status.bytes_read;
            self.partial.extend_from_slice(&out[..status.bytes_written]);
            let output_full = status.bytes_written == out.len();
            if pos >= input.len() && !output_full {
                break;
            }
            if status.bytes_read == 0 && status.bytes_written == 0 {
                break;
            }
        }
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.partial[start..].iter().position(|&b| b == b'\n') {
            lines.push(self.partial[start..start + nl].to_vec());
            start += nl + 1;
        }
        self.partial.drain(..start);
        Ok(lines)
    }
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<String>,
    timestamp: Option<i64>,
}

struct Filter {
    types: Vec<RecordType>,
    min_timestamp: Option<i64>,
}

impl Filter {
    fn accepts(&self, line: &[u8]) -> bool {
        if self.types.is_empty() && self.min_timestamp.is_none() {
            return true;
        }
        let Ok(head) = serde_json::from_slice::<Head>(line) else {
            return false;
        };
        if !self.types.is_empty() {
            let kind = head.kind.and_then(|k| k.parse::<RecordType>().ok());
            if !kind.is_some_and(|k| self.types.contains(&k)) {
                return false;
            }
        }
        match (self.min_timestamp, head.timestamp) {
            (Some(min), Some(ts)) => ts >= min,
            (Some(_), None) => false,
            (None, _) => true,
        }
    }
}

/// One human-readable line per record.
pub fn summarize(r: &LogRecord) -> String {
    let sender = if r.sender.is_empty() {
        "<>"
    } else {
        r.sender.as_str()
    };
    let recipients = if r.recipient.is_empty() {
        "<none>".to_string()
    } else {
        r.recipient.join(",")
    };
    let enhanced = r
        .response
        .enhanced_code
        .map(|e| format!(" {}.{}.{}", e.class, e.subject, e.detail))
        .unwrap_or_default();
    format!(
        "{} {} {} {} -> {} queue={} site={} {}{} {}",
        r.event_time.to_rfc3339_opts(SecondsFormat::Millis, true),
        r.kind,
        r.id,
        sender,
        recipients,
        r.queue,
        r.site,
        r.response.code,
        enhanced,
        r.response.content,
    )
}

fn segment_names(dir: &Path) -> Result<Vec<String>, LogError> {
    let io_err = |source| LogError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        if !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            if !name.starts_with('.') {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

enum Emit {
    Continue,
    /// The reader went away (e.g. `| head`): stop quietly.
    Closed,
}

fn emit(out: &mut dyn Write, opts: &TailOptions, line: &[u8]) -> Result<Emit, LogError> {
    let result = if opts.json {
        out.write_all(line).and_then(|_| out.write_all(b"\n"))
    } else {
        match serde_json::from_slice::<LogRecord>(line) {
            Ok(r) => writeln!(out, "{}", summarize(&r)),
            Err(_) => out.write_all(line).and_then(|_| out.write_all(b"\n")),
        }
    };
    match result {
        Ok(()) => Ok(Emit::Continue),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Emit::Closed),
        Err(e) => Err(LogError::Output(e)),
    }
}

/// Print the records of `opts.log_dir`; with `follow`, never returns
/// unless output fails.
pub fn tail(opts: TailOptions, out: &mut dyn Write) -> Result<(), LogError> {
    tail_until(opts, out, &|| false)
}

/// As `tail`, but a follow loop ends once `stop()` returns true.
pub fn tail_until(
    opts: TailOptions,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<(), LogError> {
    tail_reporting(opts, out, stop, &|_, _| {})
}

/// As `tail_until`, and `progress(done, total)` after each segment of the first pass over
/// the directory (the segments that existed when it started), so a caller can show how far
/// reading a large backlog has come. Segments that appear while following are not counted.
pub fn tail_reporting(
    opts: TailOptions,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
    progress: &dyn Fn(usize, usize),
) -> Result<(), LogError> {
    let filter = Filter {
        types: opts.types.clone(),
        min_timestamp: opts.since.map(|d| {
            let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
            Utc::now()
                .checked_sub_signed(d)
                .map(|t| t.timestamp())
                .unwrap_or(i64::MIN)
        }),
    };
    let mut readers: BTreeMap<String, SegmentReader> = BTreeMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut first_pass = true;
    loop {
        let names = segment_names(&opts.log_dir)?;
        let total = names.len();
        for (i, name) in names.into_iter().enumerate() {
            if first_pass {
                progress(i, total);
            }
            if finished.contains(&name) {
                continue;
            }
            let path = opts.log_dir.join(&name);
            // Sampled before reading: a segment sealed after this check is
            // read once more on the next round, so its last records are not lost.
            let sealed = match fs::metadata(&path) {
                Ok(m) => !is_writable(&m),
                Err(_) => continue,
            };
            if !readers.contains_key(&name) {
                match SegmentReader::open(path.clone()) {
                    Ok(r) => {
                        readers.insert(name.clone(), r);
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot open log segment");
                        continue;
                    }
                }
            }
            let Some(reader) = readers.get_mut(&name) else {
                continue;
            };
            let lines = reader.read_available().map_err(|source| LogError::Io {
                path: path.clone(),
                source,
            })?;
            for line in lines.iter().filter(|l| filter.accepts(l)) {
                if let Emit::Closed = emit(out, &opts, line)? {
                    return Ok(());
                }
            }
            if sealed || !opts.follow {
                readers.remove(&name);
                finished.insert(name);
            }
        }
        if first_pass {
            progress(total, total);
            first_pass = false;
        }
        out.flush().map_err(LogError::Output)?;
        if !opts.follow || stop() {
            return Ok(());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
