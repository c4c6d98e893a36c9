//! Durable file publication: write under a temporary dot-name in the target
//! directory, fsync the file, move it to its final name, fsync the directory.
//! A reader of the final name sees either nothing or the complete file, and
//! after a crash the final name holds either the old or the new bytes.
//!
//! Temporary names are `.<name>.tmp-<pid>`: dot-files, which file-drop
//! receivers and regfeed's own `archive_dir` source ignore. Files are created
//! mode 0640 (less if the umask says so): batches hold health data, readable
//! by the owner and a receiving group, never by everyone.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::FeedError;

/// The temporary name used while `name` is being written by this process.
pub fn temp_name(name: &str) -> String {
    format!(".{name}.tmp-{}", std::process::id())
}

/// fsyncs a directory, making renames and links in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A temporary file that is removed on drop unless kept.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Creates `dir/.<name>.tmp-<pid>` exclusively, removing a leftover of an
    /// earlier process that had the same pid (the name is ours alone).
    pub fn create(dir: &Path, name: &str) -> io::Result<(TempFile, File)> {
        let path = dir.join(temp_name(name));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        Ok((TempFile { path, keep: false }, file))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file was moved away (renamed): nothing to remove.
    pub fn disarm(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `dir/name` through `fill`, durably, replacing any file of that
/// name atomically. `fill` gets the open temporary file; its error aborts
/// and removes the temporary file.
pub fn write_replacing<T>(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&File) -> Result<T, FeedError>,
) -> Result<T, FeedError> {
    let io_err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| FeedError::Io { op, path, source }
    };
    let (tmp, file) = TempFile::create(dir, name).map_err(io_err("creating", dir))?;
    let out = fill(&file)?;
    file.sync_all().map_err(io_err("fsyncing", tmp.path()))?;
    drop(file);
    let target = dir.join(name);
    std::fs::rename(tmp.path(), &target).map_err(io_err("renaming into", &target))?;
    tmp.disarm();
    sync_dir(dir).map_err(io_err("fsyncing directory", dir))?;
    Ok(out)
}
