//! Finding the files of an archive and telling what each one is.
//!
//! Archives mix DICOM files without extensions, `.dcm`, `.png`, `.jpg` and clutter (reports,
//! spreadsheets, `DICOMDIR`). The kind of a file is decided by its first bytes, not its name, so a
//! DICOM called `IM0001` is found and a text file called `x.png` is reported, not trusted.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dicom,
    Png,
    Jpeg,
    Other,
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Reads at most 132 bytes of `path` and classifies it.
///
/// DICOM Part 10 files carry `DICM` at offset 128. Files written without preamble and file meta
/// (older modalities, some exports) start directly with a little-endian data element; those are
/// recognised by a plausible first tag in the groups such files begin with (0002, 0008).
pub fn sniff(path: &Path) -> io::Result<FileKind> {
    let mut head = Vec::with_capacity(132);
    File::open(path)?.take(132).read_to_end(&mut head)?;
    Ok(classify(&head))
}

/// The kind of a file from its first bytes (132 are enough); what [`sniff`] reads.
pub fn classify(head: &[u8]) -> FileKind {
    if head.len() >= 132 && &head[128..132] == b"DICM" {
        return FileKind::Dicom;
    }
    if head.starts_with(b"DICM") {
        // file meta without the 128-byte preamble
        return FileKind::Dicom;
    }
    if head.starts_with(PNG_MAGIC) {
        return FileKind::Png;
    }
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return FileKind::Jpeg;
    }
    if head.len() >= 8 {
        let group = u16::from_le_bytes([head[0], head[1]]);
        let element = u16::from_le_bytes([head[2], head[3]]);
        // A raw data set opens with the file meta group or the identifying group 0008, whose
        // first elements are small-numbered (0000 to 0020: length, charset, image type, ...).
        if (group == 0x0002 || group == 0x0008) && element <= 0x0020 {
            return FileKind::Dicom;
        }
    }
    FileKind::Other
}

/// Names that are never images, skipped silently when walking: a DICOMDIR is an index of the
/// archive itself, and reports/labels commonly sit next to the images.
fn is_ignored_name(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.starts_with('.') || name.eq_ignore_ascii_case("DICOMDIR") {
        return true;
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    matches!(
        ext.as_deref(),
        Some(
            "csv" | "json" | "jsonl" | "txt" | "md" | "xml" | "html" | "pdf" | "zip" | "gz" | "py"
        )
    )
}

/// A walk over the inputs: files given directly are always returned; directories are walked
/// recursively in a stable (sorted) order, skipping hidden files and known non-image names.
///
/// Errors (unreadable folders, broken links) are returned as items so the caller can report them
/// and go on.
pub fn walk(inputs: &[PathBuf]) -> impl Iterator<Item = Result<PathBuf, (PathBuf, String)>> + '_ {
    walk_except(inputs, None)
}

/// [`walk`], leaving out the folder `skip` wherever it lies under an input (an index written
/// inside the archive it indexes).
pub fn walk_except<'a>(
    inputs: &'a [PathBuf],
    skip: Option<&'a Path>,
) -> impl Iterator<Item = Result<PathBuf, (PathBuf, String)>> + 'a {
    // Compared as canonical paths, whichever way the input and the folder were spelt.
    let skip = skip.and_then(|s| s.canonicalize().ok());
    inputs.iter().flat_map(move |input| {
        let skip = skip.clone();
        walkdir::WalkDir::new(input)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(move |e| {
                let Some(skip) = &skip else { return true };
                // The name first: one comparison for most folders, not a path resolution.
                !(e.file_type().is_dir()
                    && Some(e.file_name()) == skip.file_name()
                    && e.path().canonicalize().is_ok_and(|p| &p == skip))
            })
            .filter_map(move |entry| match entry {
                Ok(e) if e.file_type().is_file() => {
                    if e.depth() > 0 && is_ignored_name(e.path()) {
                        None
                    } else {
                        Some(Ok(e.into_path()))
                    }
                }
                Ok(_) => None,
                Err(err) => {
                    let path = err.path().unwrap_or(input).to_path_buf();
                    // walkdir's own message repeats the path the caller prints beside it.
                    let reason = match err.io_error() {
                        Some(io) => format!("cannot walk: {io}"),
                        None => err.to_string(),
                    };
                    Some(Err((path, reason)))
                }
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_content() {
        let mut part10 = vec![0u8; 128];
        part10.extend_from_slice(b"DICM\x02\x00\x00\x00");
        assert_eq!(classify(&part10), FileKind::Dicom);
        assert_eq!(classify(b"\x08\x00\x05\x00CS\x0a\x00"), FileKind::Dicom);
        assert_eq!(classify(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), FileKind::Png);
        assert_eq!(classify(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]), FileKind::Jpeg);
        assert_eq!(classify(b"PatientID,Finding\n"), FileKind::Other);
        assert_eq!(classify(b""), FileKind::Other);
    }

    #[test]
    fn walks_sorted_and_skips_clutter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for name in [
            "b.png",
            "a.dcm",
            "sub/c.jpg",
            "labels.csv",
            ".hidden",
            "DICOMDIR",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let found: Vec<String> = walk(&[dir.path().to_path_buf()])
            .map(|r| r.unwrap())
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(found, ["a.dcm", "b.png", "sub/c.jpg"]);
    }
}
