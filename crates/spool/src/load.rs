//! Reading queued messages back. A message waiting in a queue may be held
//! as its id alone (crates/queue/src/held.rs); a delivery session reads it
//! back here, record and bytes, many messages per RocksDB call.

use bytes::Bytes;
use hermod_message::{Message, SpoolId, SpoolRecord};

use crate::db::{cf, Dbs, DATA_CF, META_CF};
use crate::enumerate::hex;
use crate::error::SpoolError;

/// Each message's bytes, in the order of `ids`.
pub(crate) fn data_many(dbs: &Dbs, ids: &[SpoolId]) -> Vec<Result<Bytes, SpoolError>> {
    let data_cf = match cf(&dbs.data, DATA_CF) {
        Ok(c) => c,
        Err(e) => return ids.iter().map(|_| Err(e.clone())).collect(),
    };
    let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
    dbs.data
        .batched_multi_get_cf(data_cf, keys, false)
        .into_iter()
        .zip(ids)
        .map(|(r, id)| match r {
            Ok(Some(v)) => Ok(Bytes::copy_from_slice(&v)),
            Ok(None) => Err(SpoolError::NotFound(*id)),
            Err(e) => Err(SpoolError::from_rocks("read data spool", e)),
        })
        .collect()
}

/// Each message (envelope, meta, schedule, and its bytes when `with_data`),
/// in the order of `ids`. A record that no longer parses is `Corrupt`: it stays in the
/// spool, where the next start-up's enumeration moves it aside.
pub(crate) fn messages(
    dbs: &Dbs,
    ids: &[SpoolId],
    with_data: bool,
) -> Vec<Result<Message, SpoolError>> {
    let meta_cf = match cf(&dbs.meta, META_CF) {
        Ok(c) => c,
        Err(e) => return ids.iter().map(|_| Err(e.clone())).collect(),
    };
    let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
    let mut out: Vec<Result<Message, SpoolError>> = Vec::with_capacity(ids.len());
    // The messages whose bytes are in the data spool: (index in `out`, id).
    let mut need_data = Vec::new();
    for (r, id) in dbs
        .meta
        .batched_multi_get_cf(meta_cf, keys, false)
        .into_iter()
        .zip(ids)
    {
        let parsed = match r {
            Ok(Some(v)) => parse(*id, &v),
            Ok(None) => Err(SpoolError::NotFound(*id)),
            Err(e) => Err(SpoolError::from_rocks("read meta spool", e)),
        };
        if let Ok(m) = &parsed {
            if with_data && !m.is_data_loaded() {
                need_data.push((out.len(), *id));
            }
        }
        out.push(parsed);
    }
    if !need_data.is_empty() {
        let wanted: Vec<SpoolId> = need_data.iter().map(|(_, id)| *id).collect();
        for ((i, _), data) in need_data.iter().zip(data_many(dbs, &wanted)) {
            match data {
                Ok(d) => {
                    if let Ok(m) = &out[*i] {
                        m.load_data(d);
                    }
                }
                Err(e) => out[*i] = Err(e),
            }
        }
    }
    out
}

fn parse(id: SpoolId, meta: &[u8]) -> Result<Message, SpoolError> {
    let corrupt = |reason: String| SpoolError::Corrupt {
        id: hex(id.as_bytes()),
        reason,
    };
    let record = Message::parse_spool_record(meta).map_err(|e| corrupt(e.to_string()))?;
    // A log-hook message keeps its data in its record (crates/queue/src/hooks/mod.rs).
    let data = if record.data_is_log_record {
        Some(SpoolRecord::embedded_data(meta).map_err(|e| corrupt(e.to_string()))?)
    } else {
        None
    };
    Ok(Message::from_spool(id, record, data))
}
