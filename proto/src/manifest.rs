//! Image manifests: fixed-size chunks, a BLAKE3 hash per chunk, and a root.
//!
//! # Contract
//! * An image of `size` bytes is cut into `ceil(size / chunk_size)` chunks;
//!   every chunk is `chunk_size` bytes except possibly the last. An empty
//!   image has no chunks.
//! * Chunk `i` is identified by `BLAKE3(bytes of chunk i)`.
//! * The root binds the geometry and every chunk hash:
//!   `BLAKE3-derive-key("imageswarm 2026-11 manifest root v1",
//!   u64le(chunk_size) ‖ u64le(size) ‖ hash_0 ‖ … ‖ hash_{n-1})`.
//!   A list vouches for an image's root; a manifest whose root matches is
//!   then trusted chunk by chunk.
//! * Parse, don't validate: a [`Manifest`] becomes a [`VerifiedManifest`]
//!   only by matching a root that a trusted source vouched for
//!   ([`Manifest::verify_root`]), and received bytes become a
//!   [`VerifiedChunk`] only through [`VerifiedManifest::verify_chunk`],
//!   whose failures ([`ChunkError`]) say which check failed.
//! * [`ManifestBuilder`] takes the bytes in any slicing and keeps at most one
//!   partial chunk buffered, so memory does not grow with the image. Whole
//!   chunks handed over together are hashed in parallel, and a single large
//!   chunk uses BLAKE3's own parallelism.

use std::fmt;
use std::sync::Arc;

use rayon::prelude::*;

use crate::Error;

const ROOT_CONTEXT: &str = "imageswarm 2026-11 manifest root v1";

/// The most chunks an image may have: its have-map (128 KiB) then fits a
/// hello beside the others', and its manifest (32 MiB of hashes) one
/// response ([`crate::wire::Limit`]). An image with more could never be
/// exchanged.
pub const MAX_CHUNKS: u64 = 1 << 20;

/// A chunk size: a power of two from 1 KiB to 1 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSize(u32);

impl ChunkSize {
    /// The chunk size of an image whose list entry names none: 4 MiB.
    pub const DEFAULT: Self = Self(4 << 20);
    const MIN: u64 = 1 << 10;
    const MAX: u64 = 1 << 30;
    /// The smallest size [`ChunkSize::for_image`] picks.
    const AUTO_MIN: u64 = 128 << 10;
    /// About how many chunks [`ChunkSize::for_image`] aims at.
    const AUTO_CHUNKS: u64 = 512;

    /// The chunk size an endorser gets by default for an image of `size`
    /// bytes: the smallest power of two from 128 KiB to 4 MiB that cuts it
    /// into at most 512 chunks (64 MiB: 128 KiB; 256 MiB: 512 KiB; 1 GiB:
    /// 2 MiB; 2 GiB and up: 4 MiB).
    ///
    /// A chunk is passed on only once it is whole and verified, so every
    /// relay in the swarm costs one chunk's transfer time at the rate the
    /// relay's uplink gives it: the more chunks, the smaller that share of
    /// the whole. Each chunk also costs a request, a disk sync and a Have to
    /// every peer, which smaller chunks pay more often. Hence the floor of
    /// 128 KiB: smaller chunks shorten relays that are already short, and
    /// their per-chunk work, not the link, becomes what limits a host
    /// (docs/BENCHMARKS.md has the measurements).
    pub fn for_image(size: u64) -> Self {
        let wanted = size.div_ceil(Self::AUTO_CHUNKS).next_power_of_two();
        // Beyond 4 TiB, 4 MiB chunks would be more than MAX_CHUNKS.
        let fits = size.div_ceil(MAX_CHUNKS).next_power_of_two();
        Self(wanted.clamp(Self::AUTO_MIN, Self::DEFAULT.get()).max(fits).min(Self::MAX) as u32)
    }

    /// Accepts powers of two from 1 KiB to 1 GiB.
    pub fn new(bytes: u64) -> Result<Self, Error> {
        if bytes.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(Self(bytes as u32))
        } else {
            Err(Error::ChunkSize(bytes))
        }
    }

    /// The size in bytes.
    pub fn get(self) -> u64 {
        u64::from(self.0)
    }

    /// How many chunks an image of `size` bytes has.
    pub fn chunk_count(self, size: u64) -> u64 {
        size.div_ceil(self.get())
    }

    /// Checks that an image of `size` bytes in chunks of this size has at
    /// most [`MAX_CHUNKS`] chunks, naming the least chunk size that fits
    /// when it has more.
    pub fn check_count(self, size: u64) -> Result<(), Error> {
        let chunks = self.chunk_count(size);
        if chunks <= MAX_CHUNKS {
            return Ok(());
        }
        let least = size.div_ceil(MAX_CHUNKS).next_power_of_two().max(Self::MIN);
        Err(Error::TooManyChunks { size, chunk_size: self.get(), chunks, max: MAX_CHUNKS, least })
    }

    /// The length of chunk `index` of an image of `size` bytes, or `None`
    /// when there is no such chunk.
    pub fn chunk_len(self, size: u64, index: u64) -> Option<u64> {
        let start = index.checked_mul(self.get())?;
        (start < size).then(|| (size - start).min(self.get()))
    }
}

impl Default for ChunkSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The BLAKE3 hash of one chunk.
pub type ChunkHash = [u8; 32];

/// A manifest root, written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ManifestRoot(pub [u8; 32]);

impl ManifestRoot {
    /// Parses 64 hex digits (either case).
    pub fn parse_hex(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| format!("`{s}` is not 64 hex digits"))?;
        Ok(Self(out))
    }
}

impl fmt::Display for ManifestRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ManifestRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestRoot({self})")
    }
}

/// The chunk hashes of one image and the root over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    chunk_size: ChunkSize,
    size: u64,
    hashes: Arc<[ChunkHash]>,
    root: ManifestRoot,
}

impl Manifest {
    /// Builds a manifest from its parts and computes the root.
    pub fn from_hashes(chunk_size: ChunkSize, size: u64, hashes: impl Into<Arc<[ChunkHash]>>) -> Result<Self, Error> {
        let hashes = hashes.into();
        let expected = chunk_size.chunk_count(size);
        if hashes.len() as u64 != expected {
            return Err(Error::Field {
                at: "manifest".into(),
                reason: format!("{} chunk hashes for {expected} chunks", hashes.len()),
            });
        }
        let root = root_of(chunk_size, size, &hashes);
        Ok(Self { chunk_size, size, hashes, root })
    }

    /// Checks that this manifest has the root a trusted source vouched for.
    pub fn check_root(&self, expected: ManifestRoot) -> Result<(), Error> {
        if self.root == expected {
            Ok(())
        } else {
            Err(Error::ManifestRoot { expected: expected.to_string(), computed: self.root.to_string() })
        }
    }

    /// The manifest as one whose chunks can be trusted, if it has the root
    /// a trusted source (a verified list, or an attestation the site
    /// trusts) vouched for.
    pub fn verify_root(self, expected: ManifestRoot) -> Result<VerifiedManifest, Error> {
        self.check_root(expected)?;
        Ok(VerifiedManifest(self))
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> ChunkSize {
        self.chunk_size
    }

    /// The image size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root over all chunk hashes.
    pub fn root(&self) -> ManifestRoot {
        self.root
    }

    /// The hash of every chunk, in order.
    pub fn hashes(&self) -> &[ChunkHash] {
        &self.hashes
    }

    /// The hashes, shared.
    pub fn shared_hashes(&self) -> Arc<[ChunkHash]> {
        self.hashes.clone()
    }

    /// How many chunks the image has.
    pub fn chunk_count(&self) -> u32 {
        // `from_hashes` and the builder hold one hash per chunk; a count
        // beyond u32 cannot be requested on the wire anyway.
        u32::try_from(self.hashes.len()).unwrap_or(u32::MAX)
    }
}

/// A manifest whose root matched the one a trusted source vouched for: the
/// only kind received chunks are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedManifest(Manifest);

impl std::ops::Deref for VerifiedManifest {
    type Target = Manifest;

    fn deref(&self) -> &Manifest {
        &self.0
    }
}

/// Why received bytes are not the chunk they were asked for as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The image has no chunk of that index.
    #[error("chunk {index}: the image has {chunks} chunks")]
    NoSuchChunk {
        /// The index asked for.
        index: u32,
        /// How many chunks the image has.
        chunks: u32,
    },
    /// The bytes are not as long as the chunk.
    #[error("chunk {index}: {got} bytes, the manifest says {expected}")]
    WrongLength {
        /// The chunk.
        index: u32,
        /// Its length.
        expected: u64,
        /// The length received.
        got: u64,
    },
    /// The bytes do not hash to the manifest's hash for the chunk.
    #[error("chunk {index}: the BLAKE3 hash does not match the manifest")]
    WrongHash {
        /// The chunk.
        index: u32,
    },
}

/// What a chunk's received bytes offer the check: their length and their
/// BLAKE3 hash. Byte buffers hash their bytes; the simulator's stand-ins
/// carry the hash their sender put in.
pub trait ChunkBody {
    /// The length in bytes.
    fn byte_len(&self) -> u64;
    /// The BLAKE3 hash of the bytes.
    fn blake3(&self) -> ChunkHash;
}

impl<T: AsRef<[u8]> + ?Sized> ChunkBody for T {
    fn byte_len(&self) -> u64 {
        self.as_ref().len() as u64
    }

    fn blake3(&self) -> ChunkHash {
        hash_chunk(self.as_ref())
    }
}

/// A chunk's bytes that matched a [`VerifiedManifest`]: what the store
/// takes, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChunk<B> {
    index: u32,
    hash: ChunkHash,
    body: B,
}

impl<B> VerifiedChunk<B> {
    /// The chunk's position in the image.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Its BLAKE3 hash (the manifest's).
    pub fn hash(&self) -> ChunkHash {
        self.hash
    }

    /// Its bytes.
    pub fn body(&self) -> &B {
        &self.body
    }
}

impl VerifiedManifest {
    /// Checks that `body` is chunk `index`: its length and its BLAKE3 hash
    /// are the manifest's.
    pub fn verify_chunk<B: ChunkBody>(&self, index: u32, body: B) -> Result<VerifiedChunk<B>, ChunkError> {
        let chunks = self.chunk_count();
        let (Some(expected), Some(&hash)) =
            (self.chunk_size.chunk_len(self.size, u64::from(index)), self.hashes.get(index as usize))
        else {
            return Err(ChunkError::NoSuchChunk { index, chunks });
        };
        let got = body.byte_len();
        if got != expected {
            return Err(ChunkError::WrongLength { index, expected, got });
        }
        if body.blake3() != hash {
            return Err(ChunkError::WrongHash { index });
        }
        Ok(VerifiedChunk { index, hash, body })
    }
}

fn root_of(chunk_size: ChunkSize, size: u64, hashes: &[ChunkHash]) -> ManifestRoot {
    let mut h = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
    h.update(&chunk_size.get().to_le_bytes());
    h.update(&size.to_le_bytes());
    for c in hashes {
        h.update(c);
    }
    ManifestRoot(*h.finalize().as_bytes())
}

/// Hashes one chunk's bytes.
pub fn hash_chunk(bytes: &[u8]) -> ChunkHash {
    // Above a few hundred KiB BLAKE3's tree splits well across cores.
    if bytes.len() >= 1 << 20 {
        *blake3::Hasher::new().update_rayon(bytes).finalize().as_bytes()
    } else {
        *blake3::hash(bytes).as_bytes()
    }
}

/// Builds a [`Manifest`] from a stream of bytes in any slicing.
#[derive(Debug)]
pub struct ManifestBuilder {
    chunk_size: ChunkSize,
    size: u64,
    partial: Vec<u8>,
    hashes: Vec<ChunkHash>,
}

impl ManifestBuilder {
    /// Starts an empty manifest.
    pub fn new(chunk_size: ChunkSize) -> Self {
        Self { chunk_size, size: 0, partial: Vec::new(), hashes: Vec::new() }
    }

    /// Feeds the next bytes of the image.
    pub fn update(&mut self, mut data: &[u8]) {
        let cs = self.chunk_size.get() as usize;
        self.size += data.len() as u64;
        if !self.partial.is_empty() {
            let take = (cs - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < cs {
                return;
            }
            self.hashes.push(hash_chunk(&self.partial));
            self.partial.clear();
        }
        let whole = data.len() / cs * cs;
        let (chunks, tail) = data.split_at(whole);
        match chunks.len() / cs {
            0 => {}
            1 => self.hashes.push(hash_chunk(chunks)),
            _ => {
                let hashed: Vec<ChunkHash> = chunks.par_chunks(cs).map(|c| *blake3::hash(c).as_bytes()).collect();
                self.hashes.extend(hashed);
            }
        }
        if !tail.is_empty() {
            self.partial.reserve_exact(cs);
            self.partial.extend_from_slice(tail);
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Hashes the last, short chunk and returns the manifest.
    pub fn finish(mut self) -> Manifest {
        if !self.partial.is_empty() {
            self.hashes.push(hash_chunk(&self.partial));
        }
        let root = root_of(self.chunk_size, self.size, &self.hashes);
        Manifest { chunk_size: self.chunk_size, size: self.size, hashes: self.hashes.into(), root }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_image_of_more_chunks_than_a_manifest_may_have_is_refused() {
        let kib = ChunkSize::new(1 << 10).unwrap();
        assert!(kib.check_count(MAX_CHUNKS << 10).is_ok());
        let err = kib.check_count((MAX_CHUNKS << 10) + 1).unwrap_err().to_string();
        assert!(err.contains("1048577 chunks") && err.contains("chunks of 2048 bytes or more"), "{err}");
        let huge = 8u64 << 40;
        assert!(ChunkSize::for_image(huge).check_count(huge).is_ok(), "the default size always fits");
    }

    fn cs(n: u64) -> ChunkSize {
        ChunkSize::new(n).unwrap()
    }

    #[test]
    fn default_chunk_sizes_follow_the_image_size() {
        const MIB: u64 = 1 << 20;
        let cases = [
            (0, 128 << 10),
            (MIB, 128 << 10),
            (64 * MIB, 128 << 10),
            (64 * MIB + 1, 256 << 10),
            (128 * MIB, 256 << 10),
            (256 * MIB, 512 << 10),
            (256 * MIB + 1, MIB),
            (1024 * MIB, 2 * MIB),
            (2048 * MIB, 4 * MIB),
            (40 * 1024 * MIB, 4 * MIB),
        ];
        for (size, chunk) in cases {
            assert_eq!(ChunkSize::for_image(size).get(), chunk, "{size} bytes");
            assert!(ChunkSize::new(chunk).is_ok());
        }
    }

    #[test]
    fn chunk_sizes_are_bounded_powers_of_two() {
        assert!(ChunkSize::new(1024).is_ok());
        assert!(ChunkSize::new(1 << 30).is_ok());
        for bad in [0, 512, 1000, 3 << 20, 1 << 31] {
            assert!(ChunkSize::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn geometry() {
        let c = cs(1024);
        assert_eq!(c.chunk_count(0), 0);
        assert_eq!(c.chunk_count(1), 1);
        assert_eq!(c.chunk_count(2048), 2);
        assert_eq!(c.chunk_count(2049), 3);
        assert_eq!(c.chunk_len(2049, 2), Some(1));
        assert_eq!(c.chunk_len(2049, 3), None);
        assert_eq!(c.chunk_len(u64::MAX, u64::MAX), None);
    }

    #[test]
    fn chunk_hashes_are_plain_blake3() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut b = ManifestBuilder::new(cs(1024));
        b.update(&data);
        let m = b.finish();
        assert_eq!(m.hashes().len(), 5);
        assert_eq!(m.hashes()[4], *blake3::hash(&data[4096..]).as_bytes());
        assert_eq!(m, Manifest::from_hashes(cs(1024), 5000, m.hashes().to_vec()).unwrap());
    }

    #[test]
    fn root_binds_geometry() {
        let a = Manifest::from_hashes(cs(1024), 1024, vec![[1; 32]]).unwrap();
        let b = Manifest::from_hashes(cs(2048), 1024, vec![[1; 32]]).unwrap();
        let c = Manifest::from_hashes(cs(1024), 1000, vec![[1; 32]]).unwrap();
        assert_ne!(a.root(), b.root());
        assert_ne!(a.root(), c.root());
        assert!(a.check_root(a.root()).is_ok());
        assert!(matches!(a.check_root(b.root()), Err(Error::ManifestRoot { .. })));
        assert!(Manifest::from_hashes(cs(1024), 2000, vec![[1; 32]]).is_err());
    }

    #[test]
    fn a_chunk_is_verified_only_when_its_length_and_hash_match() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i * 13) as u8).collect();
        let mut b = ManifestBuilder::new(cs(1024));
        b.update(&data);
        let m = b.finish();
        let root = m.root();
        let other = Manifest::from_hashes(cs(1024), 2500, vec![[9; 32]; 3]).unwrap();
        assert!(matches!(other.verify_root(root), Err(Error::ManifestRoot { .. })));
        let v = m.verify_root(root).unwrap();
        let good = v.verify_chunk(2, data[2048..].to_vec()).unwrap();
        assert_eq!((good.index(), good.hash()), (2, *blake3::hash(&data[2048..]).as_bytes()));
        assert_eq!(
            v.verify_chunk(1, data[1024..2047].to_vec()),
            Err(ChunkError::WrongLength { index: 1, expected: 1024, got: 1023 })
        );
        let mut flipped = data[..1024].to_vec();
        flipped[7] ^= 1;
        assert_eq!(v.verify_chunk(0, flipped), Err(ChunkError::WrongHash { index: 0 }));
        assert_eq!(v.verify_chunk(3, vec![0u8; 1]), Err(ChunkError::NoSuchChunk { index: 3, chunks: 3 }));
        assert_eq!(v.verify_chunk(u32::MAX, vec![]), Err(ChunkError::NoSuchChunk { index: u32::MAX, chunks: 3 }));
    }

    proptest! {
        #[test]
        fn slicing_does_not_change_the_manifest(
            len in 0usize..20_000,
            cuts in proptest::collection::vec(0usize..20_000, 0..6),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut whole = ManifestBuilder::new(cs(1024));
            whole.update(&data);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
            cuts.sort_unstable();
            let mut sliced = ManifestBuilder::new(cs(1024));
            let mut at = 0;
            for c in cuts.into_iter().chain([len]) {
                sliced.update(&data[at..c]);
                at = c;
            }
            prop_assert_eq!(whole.finish(), sliced.finish());
        }
    }
}
