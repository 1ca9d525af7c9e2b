//! How a shard stores a key: inline up to 21 bytes, packed 6 bits per character for
//! 22–28 characters of `0-9 A-Z a-z - _`, else in the shard's side slab ([`LONG`]); the
//! entry metadata ([`Meta`]) and the lookup form of a key ([`Probe`]). See the parent
//! module's "Packed keys" section.
//!
//! Owns: the stored forms and their markers. Must not touch: the index, the slabs' order,
//! counters.

/// Keys up to this length are stored inside the entry (no heap allocation).
pub(super) const INLINE: usize = 21;
/// `Meta::len` of a key kept in the `long` side slab (its slab index in `buf[..4]`).
pub(super) const LONG: u8 = u8::MAX;
/// `Meta::len` of a packed key is `PACKED | length`, length in `PACK_MIN..=PACK_MAX`.
pub(super) const PACKED: u8 = 0x80;
pub(super) const PACK_MIN: usize = INLINE + 1;
/// 6 bits per character: 28 characters fill the 21-byte buffer exactly.
pub(super) const PACK_MAX: usize = INLINE * 8 / 6;
/// The characters a packed key may hold, in code order (`'0'` = 0 … `'_'` = 63).
pub(super) const ALPHABET: &[u8; 64] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";
/// Byte → its 6-bit code in [`ALPHABET`], or `0xFF` for a byte outside it.
pub(super) const CODE: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};
/// Everything of an entry except its counters: 26 bytes, alignment 2 (so a slab of them
/// has no padding).
#[derive(Clone, Copy, Debug)]
pub(super) struct Meta {
    /// Key length (≤ `INLINE`: `buf` holds the key, zero-filled), `PACKED | length`
    /// (`buf` holds the packed key, see [`pack`]), or `LONG` (side slab).
    pub(super) len: u8,
    pub(super) buf: [u8; INLINE],
    pub(super) tier: u16,
    /// Index in `Shard::layouts` of the limits the counters were built with.
    pub(super) layout: u16,
}

impl Meta {
    #[inline]
    pub(super) fn long_index(&self) -> usize {
        u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize
    }
}

/// `key` (`PACK_MIN..=PACK_MAX` bytes) packed 6 bits per character, big-endian, 4
/// characters into each 3 bytes, zero-filled after the last one; `None` if a byte is
/// outside [`ALPHABET`]. No branch per character, no allocation.
#[inline]
pub(super) fn pack(key: &[u8]) -> Option<[u8; INLINE]> {
    debug_assert!((PACK_MIN..=PACK_MAX).contains(&key.len()));
    let mut out = [0u8; INLINE];
    let mut bad = 0u8;
    for (chars, dst) in key.chunks(4).zip(out.chunks_exact_mut(3)) {
        let mut w = 0u32;
        for i in 0..4 {
            let c = chars.get(i).map_or(0, |&b| CODE[b as usize]);
            bad |= c;
            w = (w << 6) | u32::from(c & 0x3F);
        }
        dst.copy_from_slice(&w.to_be_bytes()[1..]);
    }
    (bad & 0xC0 == 0).then_some(out)
}

/// The characters of a packed buffer (inverse of [`pack`]; the key is the first
/// `len & !PACKED` of them, the rest is fill).
pub(super) fn unpack(buf: &[u8; INLINE]) -> [u8; PACK_MAX] {
    let mut out = [0u8; PACK_MAX];
    for (src, dst) in buf.chunks_exact(3).zip(out.chunks_exact_mut(4)) {
        let w = u32::from_be_bytes([0, src[0], src[1], src[2]]);
        for (i, c) in dst.iter_mut().enumerate() {
            *c = ALPHABET[(w >> (18 - 6 * i)) as usize & 0x3F];
        }
    }
    out
}

#[inline]
pub(super) fn is_packed(len: u8) -> bool {
    len & PACKED != 0 && len != LONG
}

/// A key in its stored form, built once per lookup: `len` as a [`Meta`] holding it would
/// have it, `buf` too if the key is packed (raw and long keys are compared as slices, as
/// they are stored), and the key itself.
pub(super) struct Probe<'k> {
    pub(super) len: u8,
    pub(super) buf: [u8; INLINE],
    pub(super) key: &'k [u8],
}

impl<'k> Probe<'k> {
    #[inline]
    pub(super) fn new(key: &'k [u8]) -> Probe<'k> {
        let n = key.len();
        let buf = [0u8; INLINE];
        if n <= INLINE {
            return Probe {
                len: n as u8,
                buf,
                key,
            };
        }
        if n <= PACK_MAX
            && let Some(packed) = pack(key)
        {
            return Probe {
                len: PACKED | n as u8,
                buf: packed,
                key,
            };
        }
        Probe {
            len: LONG,
            buf,
            key,
        }
    }
}
