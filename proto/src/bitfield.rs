//! A fixed-length set of chunk indices: which chunks a node (or a peer) has.
//!
//! Bit `i` is bit `7 - i % 8` of byte `i / 8` (BitTorrent order), and bits
//! past `len` are always zero, so two bitfields of the same length are equal
//! exactly when they hold the same chunks, and [`Bitfield::from_bytes`]
//! rejects encodings with stray high bits.

use crate::Error;

/// A set of chunk indices below a fixed length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bitfield {
    len: u32,
    bytes: Vec<u8>,
}

impl Bitfield {
    /// An empty set over `len` chunks.
    pub fn new(len: u32) -> Self {
        Self { len, bytes: vec![0; (len as usize).div_ceil(8)] }
    }

    /// A full set over `len` chunks.
    pub fn full(len: u32) -> Self {
        let mut b = Self { len, bytes: vec![0xff; (len as usize).div_ceil(8)] };
        b.clear_tail();
        b
    }

    /// Decodes `bytes` as a bitfield over `len` chunks.
    pub fn from_bytes(len: u32, bytes: &[u8]) -> Result<Self, Error> {
        let b = Self { len, bytes: bytes.to_vec() };
        if bytes.len() != (len as usize).div_ceil(8) {
            return Err(Error::Field {
                at: "bitfield".into(),
                reason: format!("{} bytes for {len} chunks", bytes.len()),
            });
        }
        let mut clean = b.clone();
        clean.clear_tail();
        if clean != b {
            return Err(Error::Field { at: "bitfield".into(), reason: "bits set past the last chunk".into() });
        }
        Ok(b)
    }

    /// The encoding: `ceil(len / 8)` bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The set 64 chunks at a time: word `w` holds chunks `64 w ..` from its
    /// most significant bit down (the byte order read as big-endian), the
    /// last word padded with zeros. For scans that combine several sets.
    pub fn words(&self) -> impl Iterator<Item = u64> + '_ {
        self.bytes.chunks(8).map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_be_bytes(w)
        })
    }

    /// How many chunks the set ranges over.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the set ranges over no chunks at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether chunk `i` is in the set (false past the end).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Adds chunk `i`; returns whether it was new. Indices past the end are ignored.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        true
    }

    /// Removes chunk `i`.
    pub fn unset(&mut self, i: u32) {
        if i < self.len {
            self.bytes[(i / 8) as usize] &= !(0x80 >> (i % 8));
        }
    }

    /// Adds every chunk of `other` (of the same length; otherwise nothing).
    pub fn union_with(&mut self, other: &Self) {
        if other.len == self.len {
            self.bytes.iter_mut().zip(&other.bytes).for_each(|(a, b)| *a |= b);
        }
    }

    /// How many chunks are in the set.
    pub fn count(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }

    /// Zero exactly when the set is empty; cheaper than [`Bitfield::count`]
    /// for that question.
    pub fn count_hint(&self) -> u32 {
        u32::from(self.bytes.iter().any(|&b| b != 0))
    }

    /// Whether every chunk is in the set.
    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// The chunks not in the set, in order.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| !self.get(i))
    }

    fn clear_tail(&mut self) {
        let rem = self.len % 8;
        if rem != 0
            && let Some(last) = self.bytes.last_mut()
        {
            *last &= 0xffu8 << (8 - rem);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn basics() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0) && b.set(9) && !b.set(9) && !b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert_eq!(b.missing().count(), 8);
        assert!(Bitfield::full(10).is_full());
        assert_eq!(Bitfield::full(10).as_bytes(), &[0xff, 0xc0]);
        assert!(Bitfield::from_bytes(10, &[0xff, 0xe0]).is_err(), "stray bit past the end");
        assert!(Bitfield::from_bytes(10, &[0xff]).is_err(), "wrong length");
        assert!(Bitfield::new(0).is_full());
    }

    proptest! {
        #[test]
        fn encoding_round_trips(len in 0u32..200, bits in proptest::collection::vec(0u32..200, 0..50)) {
            let mut b = Bitfield::new(len);
            for i in &bits {
                b.set(*i);
            }
            let again = Bitfield::from_bytes(len, b.as_bytes()).unwrap();
            prop_assert_eq!(&again, &b);
            for i in 0..len {
                prop_assert_eq!(b.get(i), bits.contains(&i));
            }
            let from_words: Vec<u32> = b
                .words()
                .enumerate()
                .flat_map(|(w, word)| (0..64).filter(move |k| word & (1u64 << (63 - k)) != 0).map(move |k| w as u32 * 64 + k))
                .collect();
            prop_assert_eq!(from_words, (0..len).filter(|&i| b.get(i)).collect::<Vec<_>>());
        }
    }
}
