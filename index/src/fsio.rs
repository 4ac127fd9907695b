//! Small file-system helpers that carry the durability rules of the format in one place: data
//! files are written once, flushed and fsync'd before the manifest names them; the manifest is
//! replaced by write-temp/fsync/rename/fsync-folder (as tantivy's `atomic_write` does); every
//! file the manifest names has a length and CRC-32 that are checked when it is read back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IndexError, Result};
use crate::manifest::FileEntry;

/// A writer that counts bytes and computes their CRC-32 as they pass.
pub(crate) struct CrcWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> CrcWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        CrcWriter {
            inner,
            hasher: crc32fast::Hasher::new(),
            len: 0,
        }
    }
}

impl<W> CrcWriter<W> {
    /// The CRC-32 of the bytes written so far.
    pub(crate) fn crc32(&self) -> u32 {
        self.hasher.clone().finalize()
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Creates (or truncates) `dir/name`, lets `fill` write its content, then flushes and fsyncs
/// it. Returns the entry (name, length, CRC-32) to record in the manifest.
pub(crate) fn write_synced(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<FileEntry> {
    let path = dir.join(name);
    let file = File::create(&path).map_err(IndexError::io(&path))?;
    let mut out = CrcWriter::new(BufWriter::with_capacity(1 << 20, file));
    fill(&mut out).map_err(IndexError::io(&path))?;
    out.flush().map_err(IndexError::io(&path))?;
    let CrcWriter { inner, hasher, len } = out;
    let file = inner.into_inner().map_err(|e| IndexError::Io {
        path: path.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(IndexError::io(&path))?;
    Ok(FileEntry {
        name: name.to_string(),
        len,
        crc32: hasher.finalize(),
    })
}

/// Describes (length, CRC-32) and fsyncs a file somebody else wrote (the hnsw_rs dumps). The
/// file is read in blocks: the dumps hold every vector, and a commit must not hold them twice.
pub(crate) fn describe_and_sync(dir: &Path, name: &str) -> Result<FileEntry> {
    let path = dir.join(name);
    // Opened for writing because some platforms refuse to fsync a read-only handle.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(IndexError::io(&path))?;
    let (len, crc32) = crc_of(&file).map_err(IndexError::io(&path))?;
    file.sync_all().map_err(IndexError::io(&path))?;
    Ok(FileEntry {
        name: name.to_string(),
        len,
        crc32,
    })
}

/// Length and CRC-32 of everything `reader` yields, read in 1 MiB blocks.
fn crc_of(mut reader: impl Read) -> io::Result<(u64, u32)> {
    let mut hasher = crc32fast::Hasher::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize()))
}

/// [`verify`] without holding the file in memory: `dir/entry.name` is read in blocks.
pub(crate) fn verify_file(dir: &Path, entry: &FileEntry) -> Result<()> {
    let path = dir.join(&entry.name);
    let file = File::open(&path).map_err(IndexError::io(&path))?;
    let (len, crc) = crc_of(file).map_err(IndexError::io(&path))?;
    check_entry(&path, entry, len, crc)
}

/// The error for a file whose length or CRC-32 disagrees with its manifest entry.
pub(crate) fn check_entry(path: &Path, entry: &FileEntry, len: u64, crc: u32) -> Result<()> {
    if len != entry.len {
        return Err(IndexError::corrupt(
            path,
            format!("length is {len} bytes, the manifest says {}", entry.len),
        ));
    }
    if crc != entry.crc32 {
        return Err(IndexError::corrupt(
            path,
            format!("CRC-32 is {crc:08x}, the manifest says {:08x}", entry.crc32),
        ));
    }
    Ok(())
}

/// Checks that `bytes` (the content of `dir/entry.name`) match the manifest's length and CRC.
pub(crate) fn verify(dir: &Path, entry: &FileEntry, bytes: &[u8]) -> Result<()> {
    check_entry(
        &dir.join(&entry.name),
        entry,
        bytes.len() as u64,
        crc32fast::hash(bytes),
    )
}

/// Reads `dir/entry.name` whole and verifies it against the manifest.
#[cfg(test)]
pub(crate) fn read_verified(dir: &Path, entry: &FileEntry) -> Result<Vec<u8>> {
    let path = dir.join(&entry.name);
    let bytes = fs::read(&path).map_err(IndexError::io(&path))?;
    verify(dir, entry, &bytes)?;
    Ok(bytes)
}

/// Makes renames and new entries in `dir` durable. A no-op where folders cannot be opened
/// (Windows), where the rename itself is durable enough.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(IndexError::io(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Replaces `dir/name` atomically with `bytes`: write a temporary file in the same folder,
/// flush, fsync, rename over the target, fsync the folder. Readers see either the old or the
/// new content, never a mix, and after a crash one of the two is on disk.
pub(crate) fn atomic_write(dir: &Path, name: &str, tmp_name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(tmp_name);
    let target = dir.join(name);
    {
        let mut file = File::create(&tmp).map_err(IndexError::io(&tmp))?;
        file.write_all(bytes).map_err(IndexError::io(&tmp))?;
        file.flush().map_err(IndexError::io(&tmp))?;
        file.sync_all().map_err(IndexError::io(&tmp))?;
    }
    fs::rename(&tmp, &target).map_err(IndexError::io(&target))?;
    sync_dir(dir)
}

/// The current time as an RFC 3339 UTC timestamp with second precision
/// (`2024-05-01T12:34:56Z`), for manifests and the failure log.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339_from_unix(secs)
}

fn rfc3339_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); H. Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_from_unix(1_714_566_896), "2024-05-01T12:34:56Z");
    }

    #[test]
    fn write_synced_records_length_and_crc() {
        let dir = tempfile::tempdir().unwrap();
        let entry = write_synced(dir.path(), "a.bin", |w: &mut dyn Write| {
            w.write_all(b"hello")
        })
        .unwrap();
        assert_eq!(entry.len, 5);
        assert_eq!(entry.crc32, crc32fast::hash(b"hello"));
        assert_eq!(read_verified(dir.path(), &entry).unwrap(), b"hello");

        std::fs::write(dir.path().join("a.bin"), b"hellO").unwrap();
        let err = read_verified(dir.path(), &entry).unwrap_err();
        assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        atomic_write(dir.path(), "m.json", "m.json.tmp", b"one").unwrap();
        atomic_write(dir.path(), "m.json", "m.json.tmp", b"two").unwrap();
        assert_eq!(std::fs::read(dir.path().join("m.json")).unwrap(), b"two");
        assert!(!dir.path().join("m.json.tmp").exists());
    }
}
