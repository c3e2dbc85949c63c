//! Getting a data set that was not found: downloads from the official mirrors, verified by
//! SHA-256 before anything gets its final name, and archives extracted within bounds.

use std::path::Path;

use flint_io::fs::{sha256_file, temp_sibling};

use super::{DataFile, DatasetSpec, Located, Origin, Source, files_in};
use crate::download::{check_sha256, fetch_to_file_limited, fetch_to_temp};
use crate::error::{DataError, Result};
use crate::gzip::sha256_maybe_gzip;

/// Downloads a data set into `dir` and returns where its files are.
pub fn download(spec: &DatasetSpec, dir: &Path) -> Result<Located> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    match spec.source {
        Source::GzipFiles { mirrors } => {
            let mut files = Vec::new();
            for file in spec.files {
                let dest = dir.join(format!("{}.gz", file.name));
                if !dest.is_file() {
                    download_gz(mirrors, file, &dest)?;
                }
                files.push(dest);
            }
            Ok(Located {
                dir: dir.to_path_buf(),
                origin: Origin::Downloaded,
                files,
            })
        }
        Source::TarGz {
            urls,
            sha256,
            folder,
            max_bytes,
        } => {
            let archive = dir.join(format!("{}.tar.gz", spec.name));
            let mut last = None;
            for url in urls {
                match fetch_to_file_limited(url, &archive, sha256, max_bytes) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
            extract_tar_gz(&archive, folder, dir)?;
            let _ = std::fs::remove_file(&archive);
            let files =
                files_in(dir, spec).map_err(|why| DataError::format(dir, why.to_string()))?;
            Ok(Located {
                dir: dir.to_path_buf(),
                origin: Origin::Downloaded,
                files,
            })
        }
        Source::Manual { url } => Err(DataError::Download {
            url: url.to_string(),
            reason: format!("{} has no verified download; {}", spec.name, spec.hint),
        }),
    }
}

/// Downloads `<mirror><name>.gz` from the first mirror that serves it, streamed to a temporary
/// file (at most a little more than the file's official size: gzip never grows data by more than
/// a few bytes per 16 KiB block), then inflates it streamed, at most the official size, checking
/// the SHA-256 of the content, and only then gives it its name.
fn download_gz(mirrors: &[&str], file: &DataFile, dest: &Path) -> Result<()> {
    let max_gz = file.size + file.size / 100 + 1024;
    let tmp = temp_sibling(dest);
    let mut errors = Vec::new();
    for mirror in mirrors {
        let url = format!("{mirror}{}.gz", file.name);
        let attempt = fetch_to_temp(&url, &tmp, max_gz).and_then(|_| {
            let content = sha256_maybe_gzip(&tmp, file.size).map_err(|e| DataError::Download {
                url: url.clone(),
                reason: format!("not a valid gzip file ({e})"),
            })?;
            let content = content.ok_or_else(|| DataError::Download {
                url: url.clone(),
                reason: format!(
                    "decompresses to more than the {} bytes of {}",
                    file.size, file.name
                ),
            })?;
            check_sha256(&url, file.sha256, &content)?;
            std::fs::rename(&tmp, dest).map_err(|e| DataError::io(dest, e))
        });
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                errors.push(e.to_string());
            }
        }
    }
    Err(DataError::Download {
        url: file.name.to_string(),
        reason: errors.join("; "),
    })
}

/// Extracts the regular files under `folder/` of a `.tar.gz` into `dest` (flattened), each
/// streamed to a temporary file and renamed when complete. Entries outside `folder/` are
/// ignored; paths that climb out are refused. Each entry is copied no further than the size its
/// header declares.
pub fn extract_tar_gz(archive: &Path, folder: &str, dest: &Path) -> Result<()> {
    let (file, _) = flint_io::fs::open_regular(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let bad = |e: std::io::Error| DataError::format(archive, format!("corrupt archive ({e})"));
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?.into_owned();
        let Ok(rest) = path.strip_prefix(folder) else {
            continue;
        };
        let Some(name) = rest.file_name() else {
            continue;
        };
        if rest.components().count() != 1 {
            continue;
        }
        let size = entry.header().size().map_err(bad)?;
        let target = dest.join(name);
        let tmp = temp_sibling(&target);
        let copied = (|| -> Result<()> {
            let mut out = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
            let n =
                std::io::copy(&mut std::io::Read::take(&mut entry, size), &mut out).map_err(bad)?;
            if n < size {
                return Err(DataError::format(
                    archive,
                    format!(
                        "corrupt archive ({} ends after {n} of its {size} bytes)",
                        path.display()
                    ),
                ));
            }
            out.sync_all().map_err(|e| DataError::io(&tmp, e))?;
            std::fs::rename(&tmp, &target).map_err(|e| DataError::io(&target, e))
        })();
        if copied.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        copied?;
    }
    Ok(())
}

/// Checks a file's SHA-256 (not decompressed) against `expected`.
pub fn verify_file(path: &Path, expected: &str) -> Result<()> {
    check_sha256(&path.display().to_string(), expected, &sha256_file(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Case 7 of issue #18: gzip downloads are streamed to disk, capped near the file's official
    /// size, and inflated no further than that size while their checksum is computed.
    #[test]
    fn gzip_downloads_are_capped_and_inflated_within_bounds() {
        use std::io::Write;
        let gzip = |data: &[u8]| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(data).unwrap();
            gz.finish().unwrap()
        };
        let content = crate::idx::encode_idx(&[1], &[3]);
        const ONE: &[DataFile] = &[DataFile {
            name: "train-labels-idx1-ubyte",
            sha256: "placeholder",
            size: 9,
        }];
        let tmp = tempfile::tempdir().unwrap();
        let fetch = |body: Vec<u8>, sha: &'static str| {
            let url = crate::download::tests::serve(1, body, None);
            let file = DataFile {
                sha256: sha,
                ..ONE[0]
            };
            let dest = tmp.path().join("train-labels-idx1-ubyte.gz");
            download_gz(&[url.as_str()], &file, &dest).map(|()| dest)
        };
        let sha: &'static str = flint_io::fs::sha256_hex(&content).leak();
        // A bomb: the right file followed by 512 KiB of zeros (under 1033 bytes compressed).
        let mut bomb = content.clone();
        bomb.resize(512 << 10, 0);
        let msg = fetch(gzip(&bomb), sha).unwrap_err().to_string();
        assert!(
            msg.ends_with("decompresses to more than the 9 bytes of train-labels-idx1-ubyte"),
            "{msg}"
        );
        // More compressed bytes than the file could need: cut off while downloading.
        let msg = fetch(vec![0x1f; 2000], sha).unwrap_err().to_string();
        assert!(
            msg.ends_with("the download is larger than the 1033 bytes expected; stopped"),
            "{msg}"
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        let dest = fetch(gzip(&content), sha).unwrap();
        assert_eq!(crate::idx::read_idx(&dest).unwrap().data, vec![3]);
    }

    #[test]
    fn tar_extraction_keeps_only_the_folder_files() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("a.tar.gz");
        {
            let gz = flate2::write::GzEncoder::new(
                std::fs::File::create(&archive).unwrap(),
                flate2::Compression::fast(),
            );
            let mut builder = tar::Builder::new(gz);
            for (path, data) in [
                ("batches/data_batch_1.bin", &b"abc"[..]),
                ("batches/readme.html", b"r"),
                ("other/x.bin", b"no"),
            ] {
                let mut header = tar::Header::new_gnu();
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder.append_data(&mut header, path, data).unwrap();
            }
            builder.into_inner().unwrap().finish().unwrap();
        }
        let dest = tmp.path().join("out");
        std::fs::create_dir_all(&dest).unwrap();
        extract_tar_gz(&archive, "batches", &dest).unwrap();
        assert_eq!(
            std::fs::read(dest.join("data_batch_1.bin")).unwrap(),
            b"abc"
        );
        assert!(dest.join("readme.html").exists());
        assert!(!dest.join("x.bin").exists());

        std::fs::write(&archive, b"\x1f\x8bnot really").unwrap();
        let msg = extract_tar_gz(&archive, "batches", &dest)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("corrupt archive"), "{msg}");
    }
}
