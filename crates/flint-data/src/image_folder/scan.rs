//! Scanning an image folder: which files are read, which are left out and why.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::MAX_DEPTH;
use crate::error::{DataError, Result};
use crate::image_file::read_image;

/// A file (or folder) left out of an image folder, and why.
///
/// Displayed as `path: reason`, e.g.
/// `train/ants/loop: symbolic link to a folder, not followed (...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file or folder, as found under the image folder's root.
    pub path: PathBuf,
    /// What kind of problem, for counting and for machine-readable reports.
    pub kind: SkipKind,
    /// Why it could not be used: a sentence for a person, without the path.
    pub reason: String,
}

impl fmt::Display for SkippedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// Why a file was left out of an image folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SkipKind {
    /// The content is not an image at all.
    NotAnImage,
    /// An image in a format flint does not decode (BMP, WebP, ...).
    UnsupportedFormat,
    /// An empty (0-byte) file.
    Empty,
    /// A header or image that cannot be decoded, or of size zero.
    Damaged,
    /// A JPEG or PNG that ends before its end marker.
    Truncated,
    /// Too thin, too many pixels, or too large a file (see [`crate::image_file`]).
    TooLarge,
    /// A file or folder that could not be read (permissions, I/O error).
    Unreadable,
    /// A symbolic link to a folder: never followed.
    LinkedFolder,
    /// A symbolic link whose target does not exist.
    BrokenLink,
    /// A named pipe, device or socket: never opened.
    SpecialFile,
    /// A second path (link or hard link) to a file already counted.
    Duplicate,
    /// A folder nested deeper than the scan goes.
    TooDeep,
}

impl SkipKind {
    /// A stable kebab-case name (`"linked-folder"`), for JSON reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAnImage => "not-an-image",
            Self::UnsupportedFormat => "unsupported-format",
            Self::Empty => "empty",
            Self::Damaged => "damaged",
            Self::Truncated => "truncated",
            Self::TooLarge => "too-large",
            Self::Unreadable => "unreadable",
            Self::LinkedFolder => "linked-folder",
            Self::BrokenLink => "broken-link",
            Self::SpecialFile => "special-file",
            Self::Duplicate => "duplicate",
            Self::TooDeep => "too-deep",
        }
    }
}

impl fmt::Display for SkipKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(super) fn read_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

pub(super) const LINKED_FOLDER: &str = "symbolic link to a folder, not followed (links to folders can loop back into the tree or pull in another one; copy the folder, or link its files)";

/// A file's identity: device and inode on Unix (links and hard links to one file agree), the
/// canonical path elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FileKey {
    #[cfg(unix)]
    Inode(u64, u64),
    #[cfg(not(unix))]
    Path(PathBuf),
}

#[allow(unused_variables)]
fn file_key(path: &Path, meta: &std::fs::Metadata) -> FileKey {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        FileKey::Inode(meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        FileKey::Path(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    }
}

/// The walk over class folders: files found, what was left out, what was already seen.
#[derive(Default)]
pub(super) struct Scan {
    pub(super) skipped: Vec<SkippedFile>,
    files_seen: HashMap<FileKey, PathBuf>,
    dirs_seen: HashSet<FileKey>,
}

impl Scan {
    pub(super) fn skip(&mut self, path: PathBuf, kind: SkipKind, reason: impl Into<String>) {
        self.skipped.push(SkippedFile {
            path,
            kind,
            reason: reason.into(),
        });
    }

    /// Adds the regular files under `dir` to `files`, sorted, entering real sub-folders only.
    pub(super) fn dir(&mut self, dir: &Path, depth: usize, files: &mut Vec<PathBuf>) {
        if let Ok(meta) = std::fs::metadata(dir)
            && !self.dirs_seen.insert(file_key(dir, &meta))
        {
            // Only a bind mount or a hard-linked folder reaches the same folder twice.
            self.skip(
                dir.to_path_buf(),
                SkipKind::Duplicate,
                "the same folder as one already scanned: counted once",
            );
            return;
        }
        let entries = match read_sorted(dir) {
            Ok(entries) => entries,
            Err(e) => {
                let reason = match e {
                    DataError::Io { source, .. } => format!("folder could not be read: {source}"),
                    other => other.to_string(),
                };
                self.skip(dir.to_path_buf(), SkipKind::Unreadable, reason);
                return;
            }
        };
        for path in entries {
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            let link = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) => {
                    self.skip(
                        path,
                        SkipKind::Unreadable,
                        format!("could not be read: {e}"),
                    );
                    continue;
                }
            };
            let is_link = link.file_type().is_symlink();
            let meta = if is_link {
                match std::fs::metadata(&path) {
                    Ok(meta) => meta,
                    Err(e) => {
                        self.skip(
                            path,
                            SkipKind::BrokenLink,
                            format!("broken symbolic link ({e})"),
                        );
                        continue;
                    }
                }
            } else {
                link
            };
            if meta.is_dir() {
                if is_link {
                    self.skip(path, SkipKind::LinkedFolder, LINKED_FOLDER);
                } else if depth >= MAX_DEPTH {
                    self.skip(
                        path,
                        SkipKind::TooDeep,
                        format!("folder nested more than {MAX_DEPTH} levels deep: not scanned"),
                    );
                } else {
                    self.dir(&path, depth + 1, files);
                }
            } else if meta.is_file() {
                let key = file_key(&path, &meta);
                if let Some(first) = self.files_seen.get(&key) {
                    let reason = format!(
                        "the same file as {} (a link or hard link): counted once",
                        first.display()
                    );
                    self.skip(path, SkipKind::Duplicate, reason);
                } else {
                    self.files_seen.insert(key, path.clone());
                    files.push(path);
                }
            } else {
                let reason = flint_io::fs::not_regular_reason(meta.file_type());
                self.skip(path, SkipKind::SpecialFile, reason);
            }
        }
    }
}

/// Reads a file's header and checks its end: cheap next to decoding, and it catches non-images,
/// unsupported formats, degenerate sizes and truncated files.
pub(super) fn probe(path: &Path) -> std::result::Result<(), (SkipKind, String)> {
    let file = read_image(path).map_err(|p| p.into_skip())?;
    match file.truncation() {
        Some(warning) => Err((SkipKind::Truncated, warning.to_string())),
        None => Ok(()),
    }
}
