//! The durable directory listings on the store's disk, one line per name:
//! `<dir ino> <ino> <f|d> <perm, octal> <name, hex>`, and `<dir ino> -` for
//! a directory whose durable listing is empty. Written whole at every
//! directory fsync to a temporary file that is then renamed over `tree`:
//! the store's own disk does not lose power, only the mounted view does.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::model::{Entry, Kind, Listings};

pub fn save(path: &Path, listings: &Listings) -> io::Result<()> {
    let mut out = String::new();
    for (dir, entries) in listings {
        if entries.is_empty() {
            let _ = writeln!(out, "{dir} -");
        }
        for (name, e) in entries {
            let kind = match e.kind {
                Kind::File => 'f',
                Kind::Dir => 'd',
            };
            let _ = write!(out, "{dir} {} {kind} {:o} ", e.ino, e.perm);
            for b in name.as_bytes() {
                let _ = write!(out, "{b:02x}");
            }
            out.push('\n');
        }
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(&tmp, path)
}

fn bad(line: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("lossyfs tree: malformed line {line:?}"),
    )
}

/// The saved listings; none when the store is new.
pub fn load(path: &Path) -> io::Result<Listings> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Listings::new()),
        Err(e) => return Err(e),
    };
    let mut listings = Listings::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let dir: u64 = f
            .first()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad(line))?;
        let entries: &mut BTreeMap<OsString, Entry> = listings.entry(dir).or_default();
        if f.get(1) == Some(&"-") {
            continue;
        }
        let [_, ino, kind, perm, name] = f[..] else {
            return Err(bad(line));
        };
        let kind = match kind {
            "f" => Kind::File,
            "d" => Kind::Dir,
            _ => return Err(bad(line)),
        };
        let name = (0..name.len())
            .step_by(2)
            .map(|i| {
                name.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| bad(line))?;
        let entry = Entry {
            ino: ino.parse().map_err(|_| bad(line))?,
            kind,
            perm: u16::from_str_radix(perm, 8).map_err(|_| bad(line))?,
        };
        entries.insert(OsString::from_vec(name), entry);
    }
    Ok(listings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_survive_a_save_and_load_with_any_name_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tree");
        let mut l = Listings::new();
        l.insert(1, BTreeMap::new());
        let e = |ino, kind| Entry {
            ino,
            kind,
            perm: 0o644,
        };
        l.get_mut(&1)
            .unwrap()
            .insert(OsString::from("CURRENT"), e(2, Kind::File));
        l.get_mut(&1)
            .unwrap()
            .insert(OsString::from_vec(b"a b\n\xff".to_vec()), e(3, Kind::Dir));
        l.insert(3, BTreeMap::new());
        save(&path, &l).unwrap();
        assert_eq!(load(&path).unwrap(), l);
        assert_eq!(load(&dir.path().join("none")).unwrap(), Listings::new());
        std::fs::write(&path, "1 2 x 644 41\n").unwrap();
        assert!(load(&path).is_err());
    }
}
