//! Reading files a user pointed flint at, safely: regular files only, and never more bytes than
//! the file has.
//!
//! `std::fs::read` on a named pipe waits for a writer forever, and on `/dev/zero` fills memory
//! until the process is killed; a symbolic link can turn an innocent-looking path into either.
//! Every data file flint reads goes through [`open_regular`]: the path is checked to lead to a
//! regular file before it is opened (so a FIFO is refused instead of blocking in `open`), the
//! opened handle is checked again (the file may have been swapped in between), and the reads that
//! follow are bounded by the size the file had when it was opened.
//!
//! On Unix a FIFO swapped in between the two checks can still block the `open` itself; closing
//! that window needs `O_NONBLOCK`, which the standard library does not expose.

use std::fs::{File, FileType, Metadata};
use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

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

/// The message for a path that leads to something other than a regular file.
pub(crate) fn not_regular_reason(file_type: FileType) -> String {
    format!(
        "{}, not a regular file: flint reads only regular files",
        describe_file_type(file_type)
    )
}

fn check_regular(path: &Path, meta: &Metadata) -> Result<()> {
    if meta.is_file() {
        Ok(())
    } else {
        Err(DataError::format(
            path,
            not_regular_reason(meta.file_type()),
        ))
    }
}

/// Opens `path` for reading if it leads (through symbolic links) to a regular file; returns the
/// file and its size in bytes. Folders, pipes, devices and sockets are refused with an error
/// naming what they are.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    check_regular(path, &meta)?;
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let meta = file.metadata().map_err(|e| DataError::io(path, e))?;
    check_regular(path, &meta)?;
    Ok((file, meta.len()))
}

/// Reads a whole regular file, refusing one larger than `max_len` bytes before reading it.
///
/// At most the file's size at opening is read, so a file that grows meanwhile is cut there.
pub fn read_regular(path: &Path, max_len: u64) -> Result<Vec<u8>> {
    let (file, size) = open_regular(path)?;
    if size > max_len {
        return Err(DataError::format(
            path,
            format!(
                "file is {size} bytes, more than the {max_len} bytes expected for this kind of file"
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(size)
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(path, e))?;
    Ok(bytes)
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
}
