//! The hardened image checks on real photos: nothing in hymenoptera or the sample images is
//! taken for truncated, thin or damaged (a false alarm would silently shrink a data set).
//! Skips, saying why, when `$FLINT_DATA` (or `../shared/data`) lacks them; fails instead when
//! `FLINT_REQUIRE_DATA=1`.

use std::path::PathBuf;

use flint_data::ImageFolder;
use flint_data::image_folder::load_rgb_checked;

fn data_dir() -> PathBuf {
    std::env::var_os("FLINT_DATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

fn skip(reason: &str) {
    if std::env::var_os("FLINT_REQUIRE_DATA").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("required data is missing: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

#[test]
fn hymenoptera_opens_whole() {
    let root = data_dir().join("hymenoptera");
    if !root.join("train").is_dir() {
        skip(&format!("{} is missing", root.display()));
        return;
    }
    for (split, count) in [("train", 245), ("val", 153)] {
        let folder = ImageFolder::open(root.join(split)).unwrap();
        let skipped: Vec<String> = folder.skipped().iter().map(|s| s.to_string()).collect();
        assert!(skipped.is_empty(), "{split}: {skipped:#?}");
        assert_eq!(folder.len(), count, "{split}");
    }
}

#[test]
fn sample_images_decode_without_warnings() {
    let dir = data_dir().join("samples");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        skip(&format!("{} is missing", dir.display()));
        return;
    };
    let mut decoded = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let is_image = path
            .extension()
            .is_some_and(|e| e == "jpg" || e == "png" || e == "gif");
        if !is_image {
            continue;
        }
        let image = load_rgb_checked(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(image.warning, None, "{}", path.display());
        decoded += 1;
    }
    assert!(decoded > 0, "no images in {}", dir.display());
}
