//! Reading files a user pointed flint at, safely, and writing files so a crash never leaves half
//! of one.
//!
//! `std::fs::read` on a named pipe waits for a writer forever, and on `/dev/zero` fills memory
//! until the process is killed; a symbolic link can turn an innocent-looking path into either.
//! Every file flint reads goes through [`open_regular`]: the path is checked to lead to a regular
//! file before it is opened (so a FIFO is refused instead of blocking in `open`), the opened
//! handle is checked again (the file may have been swapped in between), and the reads that
//! follow are bounded by the size the file had when it was opened.
//!
//! On Unix a FIFO swapped in between the two checks can still block the `open` itself; closing
//! that window needs `O_NONBLOCK`, which the standard library does not expose.

use std::fs::{File, FileType, Metadata};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A file that could not be read or written; every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The operating system refused or failed the operation.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The path leads to a folder, pipe, device or socket.
    #[error("{path}: {}", self.reason())]
    NotRegular {
        /// The path, as given.
        path: PathBuf,
        /// What it leads to.
        file_type: FileType,
    },

    /// The file is larger than the caller allows for its kind.
    #[error("{path}: {}", self.reason())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The most the caller accepts.
        max: u64,
    },
}

impl FsError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// What is wrong, without the path (for messages that name the file their own way).
    pub fn reason(&self) -> String {
        match self {
            Self::Io { source, .. } => source.to_string(),
            Self::NotRegular { file_type, .. } => not_regular_reason(*file_type),
            Self::TooLarge { size, max, .. } => format!(
                "file is {size} bytes, more than the {max} bytes expected for this kind of file"
            ),
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::NotRegular { path, .. } | Self::TooLarge { path, .. } => {
                path
            }
        }
    }
}

/// What a non-regular file is, in words (`"a named pipe (FIFO)"`), for messages.
pub fn describe_file_type(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        return "a folder";
    }
    if file_type.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Why a path that leads to something other than a regular file is refused, for messages.
pub fn not_regular_reason(file_type: FileType) -> String {
    format!(
        "{}, not a regular file: flint reads only regular files",
        describe_file_type(file_type)
    )
}

fn check_regular(path: &Path, meta: &Metadata) -> Result<(), FsError> {
    if meta.is_file() {
        Ok(())
    } else {
        Err(FsError::NotRegular {
            path: path.to_path_buf(),
            file_type: meta.file_type(),
        })
    }
}

/// Opens `path` for reading if it leads (through symbolic links) to a regular file; returns the
/// file and its size in bytes. Folders, pipes, devices and sockets are refused with an error
/// naming what they are.
pub fn open_regular(path: &Path) -> Result<(File, u64), FsError> {
    let meta = std::fs::metadata(path).map_err(|e| FsError::io(path, e))?;
    check_regular(path, &meta)?;
    let file = File::open(path).map_err(|e| FsError::io(path, e))?;
    let meta = file.metadata().map_err(|e| FsError::io(path, e))?;
    check_regular(path, &meta)?;
    Ok((file, meta.len()))
}

/// Reads a whole regular file, refusing one larger than `max_len` bytes before reading it.
///
/// At most the file's size at opening is read, so a file that grows meanwhile is cut there.
pub fn read_regular(path: &Path, max_len: u64) -> Result<Vec<u8>, FsError> {
    let (file, size) = open_regular(path)?;
    if size > max_len {
        return Err(FsError::TooLarge {
            path: path.to_path_buf(),
            size,
            max: max_len,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(size)
        .read_to_end(&mut bytes)
        .map_err(|e| FsError::io(path, e))?;
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed, then
/// renamed over `path`. A crash leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(FsError::io(path, e));
    }
    Ok(())
}

/// A temporary name next to `path`, unique to this process (`.<name>.part-<pid>`), for content
/// that gets its final name only once complete.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.part-{}", std::process::id()))
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex SHA-256 of a file's bytes, streamed. Only regular files are read (a pipe or a device,
/// directly or through a symbolic link, is an error), and no more bytes than the file's size.
pub fn sha256_file(path: &Path) -> Result<String, FsError> {
    let (file, size) = open_regular(path)?;
    sha256_opened(file, size, path)
}

/// Hex SHA-256 of the first `size` bytes of a file already opened (with [`open_regular`]) from
/// `path`, streamed: bounded by the size it had, so a file that grows while it is read is not
/// read forever.
pub fn sha256_opened(file: File, size: u64, path: &Path) -> Result<String, FsError> {
    let mut file = file.take(size);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| FsError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// A SHA-256 fed piece by piece, for content hashed while it streams elsewhere (a download
/// written to disk, a file being inflated).
#[derive(Debug, Clone, Default)]
pub struct Sha256Hasher(Sha256);

impl Sha256Hasher {
    /// An empty hash.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hex digest of everything added.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_and_refuses_folders_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(read_regular(&path, 5).unwrap(), b"hello");
        let msg = read_regular(&path, 4).unwrap_err().to_string();
        assert!(
            msg.ends_with(
                "f: file is 5 bytes, more than the 4 bytes expected for this kind of file"
            ),
            "{msg}"
        );
        let msg = read_regular(dir.path(), 100).unwrap_err().to_string();
        assert!(
            msg.ends_with("a folder, not a regular file: flint reads only regular files"),
            "{msg}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_links_to_them_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("zeros.bin");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let msg = read_regular(&link, u64::MAX).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "{}: a character device, not a regular file: flint reads only regular files",
                link.display()
            )
        );
        assert!(sha256_file(&link).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_is_refused_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let msg = open_regular(&fifo).unwrap_err().to_string();
        assert!(
            msg.ends_with(
                "a named pipe (FIFO), not a regular file: flint reads only regular files"
            ),
            "{msg}"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let err = write_atomic(&dir.path().join("missing/out.json"), b"x").unwrap_err();
        assert!(matches!(err, FsError::Io { .. }), "{err}");
    }

    #[test]
    fn sha256_of_bytes_and_files_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), expected);
        assert_eq!(sha256_file(&path).unwrap(), expected);
        let mut hasher = Sha256Hasher::new();
        hasher.update(b"a");
        hasher.update(b"bc");
        assert_eq!(hasher.finish(), expected);
    }
}
