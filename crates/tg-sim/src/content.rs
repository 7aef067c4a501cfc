//! Deterministic file content.
//!
//! A simulated file is never stored: its bytes are a pure function of a
//! 64-bit *content key*, itself derived from the spec's `(seed, size)`.
//! Byte `o` of the file is byte `o % 8` (little endian) of word `o / 8`,
//! and word `i` is the SplitMix64 output for state `key + (i + 1) * γ`.
//! That gives random access (range requests, resumable downloads, local
//! mode writes) at several GB/s without any state, so files of many GiB
//! cost nothing until someone reads them.

use sha2::{Digest, Sha256};

/// Size of the chunks the download route and the hashers generate at once.
pub const CHUNK: usize = 64 * 1024;

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser: a good 64-bit mixing function.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The content key of a file of `size` bytes generated from `seed`.
pub fn content_key(seed: u64, size: u64) -> u64 {
    mix(seed.wrapping_add(GAMMA) ^ mix(size.wrapping_add(0x5EED)))
}

fn word(key: u64, index: u64) -> u64 {
    mix(key.wrapping_add(index.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// Fills `buf` with the content of file `key` starting at byte `offset`.
pub fn fill(key: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = 0usize;
    let mut index = offset / 8;
    // Unaligned head: only happens for range requests.
    let skip = (offset % 8) as usize;
    if skip != 0 {
        let bytes = word(key, index).to_le_bytes();
        let n = (8 - skip).min(buf.len());
        buf[..n].copy_from_slice(&bytes[skip..skip + n]);
        pos = n;
        index += 1;
    }
    let mut chunks = buf[pos..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word(key, index).to_le_bytes());
        index += 1;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let bytes = word(key, index).to_le_bytes();
        let n = tail.len();
        tail.copy_from_slice(&bytes[..n]);
    }
}

/// Streams the whole content of a file through SHA-256 (blocking; run it
/// on a blocking thread for big files). Returns lowercase hex.
pub fn sha256_hex(key: u64, size: u64) -> String {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK * 4];
    let mut offset = 0u64;
    while offset < size {
        let n = (size - offset).min(buf.len() as u64) as usize;
        fill(key, offset, &mut buf[..n]);
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_access_matches_sequential() {
        let key = content_key(7, 1000);
        let mut whole = vec![0u8; 1000];
        fill(key, 0, &mut whole);
        for start in [0usize, 1, 5, 8, 13, 997] {
            for len in [0usize, 1, 3, 8, 17] {
                let end = (start + len).min(1000);
                let mut part = vec![0u8; end - start];
                fill(key, start as u64, &mut part);
                assert_eq!(part, whole[start..end], "start {start} len {len}");
            }
        }
    }

    #[test]
    fn keys_differ_by_seed_and_size() {
        assert_ne!(content_key(1, 10), content_key(2, 10));
        assert_ne!(content_key(1, 10), content_key(1, 11));
        assert_eq!(content_key(1, 10), content_key(1, 10));
    }
}
