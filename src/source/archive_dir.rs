//! `archive_dir`: a folder of documents. Each run lists it; the store's
//! `seen(path, size, mtime, sha256)` table decides what is new or changed
//! (copied files keep old mtimes, so a time cursor alone would skip them).
//! Producers write under a temporary name and rename: dot-files, dot-folders
//! and `*.tmp` / `*.part` files are ignored.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::Located;

#[derive(Debug, Clone)]
pub struct ArchiveDir {
    name: String,
    root: PathBuf,
}

/// A file found by listing, its path relative to the root with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
}

fn ignored(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part")
}

impl ArchiveDir {
    pub fn new(name: &str, root: &Path) -> ArchiveDir {
        ArchiveDir {
            name: name.to_owned(),
            root: root.to_path_buf(),
        }
    }

    /// Whether the folder can be listed (readiness): its first entry is read.
    pub fn probe(&self) -> io::Result<()> {
        crate::preflight::folder_readable(&self.root)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every document file below the root, one folder at a time (each
    /// folder's files sorted by name, folders in sorted order): memory holds
    /// one folder's listing, never the whole tree's.
    pub fn walk(&self) -> Walk {
        Walk {
            stack: vec![(self.root.clone(), String::new())],
        }
    }

    /// Every document file below the root, sorted by path (small trees and
    /// tests; a run uses [`ArchiveDir::walk`]).
    pub fn list(&self) -> io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        for files in self.walk() {
            out.extend(files?);
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Reads a document by its relative path. Paths that would leave the root
    /// are refused.
    pub fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path_of(rel)?)
    }

    /// Reads a document, or only hashes it (in chunks, never holding it)
    /// when it is larger than `max` bytes: a huge file in the folder costs
    /// a read, not its size in memory.
    pub fn read_bounded(&self, rel: &str, max: usize) -> io::Result<Located> {
        let mut file = std::fs::File::open(self.path_of(rel)?)?;
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        let mut hasher = Sha256::new();
        let len = file.metadata()?.len();
        if len <= max {
            // Room for the whole file and one byte more, so that reading it
            // takes two reads (the bytes, then end of file), not one per
            // doubling of the buffer.
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
            (&mut file)
                .take(max.saturating_add(1))
                .read_to_end(&mut bytes)?;
            if bytes.len() as u64 <= max {
                return Ok(Located::Bytes(bytes));
            }
            // It grew while read: hash what was read, then the rest.
            hasher.update(&bytes);
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Located::TooLarge {
            sha256: hex::encode(hasher.finalize()),
        })
    }

    fn path_of(&self, rel: &str) -> io::Result<PathBuf> {
        let p = Path::new(rel);
        if p.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "locator leaves the source folder",
            ));
        }
        Ok(self.root.join(p))
    }
}

/// A folder to walk: its path and its path relative to the root.
type Folder = (PathBuf, String);

/// Walks an `archive_dir` folder by folder: see [`ArchiveDir::walk`].
#[derive(Debug)]
pub struct Walk {
    stack: Vec<Folder>,
}

impl Iterator for Walk {
    type Item = io::Result<Vec<Listed>>;

    fn next(&mut self) -> Option<Self::Item> {
        let (dir, rel) = self.stack.pop()?;
        Some(list_dir(&dir, &rel).map(|(files, mut dirs)| {
            // Pushed in reverse so the smallest name is walked first.
            dirs.sort_by(|a, b| b.1.cmp(&a.1));
            self.stack.extend(dirs);
            files
        }))
    }
}

/// One folder's document files (sorted) and subfolders.
fn list_dir(dir: &Path, rel: &str) -> io::Result<(Vec<Listed>, Vec<Folder>)> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue; // not UTF-8: cannot be a producer's document name
        };
        if ignored(&name) {
            continue;
        }
        let ft = entry.file_type()?;
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if ft.is_dir() {
            dirs.push((entry.path(), child));
        } else if ft.is_file() {
            let meta = entry.metadata()?;
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            files.push(Listed {
                path: child,
                size: meta.len(),
                mtime_ns,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((files, dirs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_documents_and_skips_temporary_and_hidden_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::create_dir_all(root.join(".hidden")).expect("mkdir");
        for f in [
            "x.xml",
            "a/y.xml",
            "a/b/z.xml",
            "a/w.xml.tmp",
            "a/v.part",
            ".dot.xml",
            ".hidden/h.xml",
        ] {
            std::fs::write(root.join(f), b"<x/>").expect("write");
        }
        let src = ArchiveDir::new("t", root);
        let names: Vec<String> = src
            .list()
            .expect("list")
            .into_iter()
            .map(|l| l.path)
            .collect();
        assert_eq!(names, vec!["a/b/z.xml", "a/y.xml", "x.xml"]);
        assert_eq!(src.read("a/y.xml").expect("read"), b"<x/>");
        assert!(src.read("../etc/passwd").is_err());
        assert!(src.read("/etc/passwd").is_err());
    }
}
