//! `bucketclone demo`: builds a sample source with the shape of the original test bucket
//! (7,500 objects over 195 prefixes, small sizes), clones it locally, verifies it and prints
//! the report. Deterministic: the same arguments make the same bytes.

use std::path::Path;

use shared::Result;

/// Writes `objects` files spread over `prefixes` top-level prefixes (two levels deep, a few
/// empty files, sizes 0 to 16 KiB) under `dir`. Returns (files, bytes).
pub fn make_sample(dir: &Path, objects: usize, prefixes: usize) -> Result<(usize, u64)> {
    let prefixes = prefixes.max(1);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut bytes = 0u64;
    let mut buf = Vec::new();
    for i in 0..objects {
        let p = i % prefixes;
        let key = format!("prefix-{p:03}/batch-{:02}/object-{i:06}.dat", (i / prefixes) % 7);
        let size = if i % 97 == 0 { 0 } else { (next(&mut rng) % 16_384) as usize };
        buf.clear();
        while buf.len() < size {
            buf.extend_from_slice(&next(&mut rng).to_le_bytes());
        }
        buf.truncate(size);
        let path = dir.join(&key);
        std::fs::create_dir_all(path.parent().expect("keys have a parent"))?;
        std::fs::write(&path, &buf)?;
        bytes += size as u64;
    }
    Ok((objects, bytes))
}

/// xorshift64*: enough randomness for sample data, no dependency.
fn next(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_has_the_requested_shape_and_is_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (n, bytes) = make_sample(a.path(), 300, 7).unwrap();
        assert_eq!(make_sample(b.path(), 300, 7).unwrap(), (n, bytes));
        assert_eq!(n, 300);
        let tops = std::fs::read_dir(a.path()).unwrap().count();
        assert_eq!(tops, 7);
        let f = "prefix-003/batch-00/object-000003.dat";
        assert_eq!(std::fs::read(a.path().join(f)).unwrap(), std::fs::read(b.path().join(f)).unwrap());
        assert!(bytes > 0);
    }
}
