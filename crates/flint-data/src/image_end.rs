//! Where a JPEG or PNG stream ends: how [`crate::image_file`] tells a truncated file (decoded
//! with a warning, or left out of an image folder) from a whole one, from the bytes alone.

/// Whether a JPEG stream reaches its end-of-image marker, following the marker structure:
/// segment lengths are skipped, entropy-coded data is scanned up to the next real marker (not a
/// stuffed `FF 00` or a restart marker), so an `FF D9` inside a segment does not count and data
/// appended after the image (as some cameras do) does not hide the end.
pub(crate) fn jpeg_reaches_end(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return true;
    }
    let mut i = 2;
    while i < b.len() {
        if b[i] != 0xFF {
            i += 1; // not at a marker: resynchronise on the next FF, as decoders do
            continue;
        }
        let mut j = i + 1;
        while j < b.len() && b[j] == 0xFF {
            j += 1; // fill bytes
        }
        let Some(&marker) = b.get(j) else {
            return false;
        };
        i = j + 1;
        match marker {
            0xD9 => return true,
            0x00 | 0x01 | 0xD0..=0xD7 => continue, // no length field
            _ => {
                let Some(len) = b.get(i..i + 2) else {
                    return false;
                };
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                if len < 2 {
                    continue;
                }
                i += len;
                if i > b.len() {
                    return false;
                }
                if marker == 0xDA {
                    // Start of scan: entropy-coded data up to the next real marker.
                    match next_marker(b, i) {
                        Some(p) => i = p,
                        None => return false,
                    }
                }
            }
        }
    }
    false
}

/// The position of the next `FF` that starts a marker other than a stuffed zero or a restart.
fn next_marker(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let p = i + b.get(i..)?.iter().position(|&x| x == 0xFF)?;
        let mut q = p + 1;
        while q < b.len() && b[q] == 0xFF {
            q += 1;
        }
        match b.get(q)? {
            0x00 | 0xD0..=0xD7 => i = q + 1,
            _ => return Some(q - 1),
        }
    }
}

/// Whether a PNG's chunk sequence reaches a complete `IEND` chunk.
pub(crate) fn png_reaches_end(b: &[u8]) -> bool {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !b.starts_with(SIGNATURE) {
        return true;
    }
    let mut i = SIGNATURE.len();
    while let Some(head) = b.get(i..i + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(end) = i.checked_add(12).and_then(|e| e.checked_add(len)) else {
            return false;
        };
        if &head[4..8] == b"IEND" {
            return end <= b.len();
        }
        i = end;
    }
    false
}
