//! The per-core SigV4 signing-key cache: the keyed HMAC state of kSigning
//! (kDate → kRegion → kService → kSigning, four HMACs) per (access key, date, region,
//! service), so a steady stream of one key's requests costs the canonical-request hash and
//! one final HMAC. Bounded: a fixed number of two-way sets, the less recently used way is
//! replaced. Entries are only inserted after a signature verified, so forged requests
//! (which can name any region) cannot push real keys out. Owned by one core (`&mut`), no
//! locks; cleared whenever the secrets table's generation changes.

use super::encode::HmacSha256;
use super::v4::Scope;

/// Default number of cached signing keys per core (216 bytes each in the table, allocated
/// up front, plus the key, region and service on the heap: ≈ 300 KB per core).
pub const DEFAULT_SIGNING_KEY_CACHE: usize = 1024;

/// Hit / miss / eviction counts since the cache was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// A valid entry was replaced to make room.
    pub evictions: u64,
}

struct Entry {
    access_key: Box<[u8]>,
    date: [u8; 8],
    region: Box<[u8]>,
    service: Box<[u8]>,
    /// HMAC-SHA256 keyed with kSigning, nothing fed yet.
    mac: HmacSha256,
    used: u64,
}

impl Entry {
    fn is(&self, s: &Scope<'_>) -> bool {
        *self.access_key == *s.access_key
            && self.date[..] == *s.date
            && *self.region == *s.region
            && *self.service == *s.service
    }
}

/// See the module documentation.
pub struct SigningKeyCache {
    sets: Box<[[Option<Entry>; 2]]>,
    generation: Option<u64>,
    tick: u64,
    stats: CacheStats,
}

impl std::fmt::Debug for SigningKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyCache")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("stats", &self.stats)
            .finish()
    }
}

fn fnv1a(parts: [&[u8]; 4]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl SigningKeyCache {
    /// A cache holding up to `capacity` keys (rounded up to a power of two, at least 2).
    pub fn new(capacity: usize) -> Self {
        let sets = capacity.max(2).next_power_of_two() / 2;
        SigningKeyCache {
            sets: (0..sets).map(|_| [None, None]).collect(),
            generation: None,
            tick: 0,
            stats: CacheStats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.sets.len() * 2
    }

    pub fn len(&self) -> usize {
        self.sets.iter().flatten().filter(|e| e.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Drops every entry (counters are kept).
    pub fn clear(&mut self) {
        self.sets.iter_mut().flatten().for_each(|e| *e = None);
    }

    /// Clears the cache when the secrets it was filled from are not those of `generation`.
    pub(crate) fn sync_generation(&mut self, generation: u64) {
        if self.generation != Some(generation) {
            self.clear();
            self.generation = Some(generation);
        }
    }

    fn set_of(&self, s: &Scope<'_>) -> usize {
        (fnv1a([s.access_key, s.date, s.region, s.service]) as usize) & (self.sets.len() - 1)
    }

    /// The keyed signing MAC for `s`, if cached.
    pub(crate) fn get(&mut self, s: &Scope<'_>) -> Option<HmacSha256> {
        self.tick += 1;
        let (set, tick) = (self.set_of(s), self.tick);
        match self.sets[set].iter_mut().flatten().find(|e| e.is(s)) {
            Some(e) => {
                e.used = tick;
                self.stats.hits += 1;
                Some(e.mac.clone())
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Caches the keyed signing MAC of `s` (which just verified a signature).
    pub(crate) fn insert(&mut self, s: &Scope<'_>, mac: HmacSha256) {
        self.tick += 1;
        let set = self.set_of(s);
        let ways = &mut self.sets[set];
        let way = match ways {
            [None, _] => 0,
            [_, None] => 1,
            [Some(a), Some(b)] => {
                self.stats.evictions += 1;
                usize::from(b.used < a.used)
            }
        };
        ways[way] = Some(Entry {
            access_key: s.access_key.into(),
            date: s.date.try_into().unwrap_or_default(),
            region: s.region.into(),
            service: s.service.into(),
            mac,
            used: self.tick,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac;

    fn scope<'a>(key: &'a [u8], region: &'a [u8]) -> Scope<'a> {
        Scope {
            access_key: key,
            date: b"20130524",
            region,
            service: b"s3",
        }
    }

    fn mac(tag: u8) -> HmacSha256 {
        HmacSha256::new_from_slice(&[tag]).unwrap()
    }

    fn tag_of(m: HmacSha256) -> [u8; 32] {
        m.finalize().into_bytes().into()
    }

    #[test]
    fn hit_after_insert_and_generation_clears() {
        let mut c = SigningKeyCache::new(8);
        c.sync_generation(1);
        let s = scope(b"K", b"us-east-1");
        assert!(c.get(&s).is_none());
        c.insert(&s, mac(7));
        assert_eq!(c.get(&s).map(tag_of), Some(tag_of(mac(7))));
        assert!(c.get(&scope(b"K", b"eu-west-1")).is_none());
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 1,
                misses: 2,
                evictions: 0
            }
        );
        c.sync_generation(1);
        assert_eq!(c.len(), 1);
        c.sync_generation(2);
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_with_lru_within_a_set() {
        let mut c = SigningKeyCache::new(2); // one set, two ways
        assert_eq!(c.capacity(), 2);
        let (a, b, d) = (scope(b"A", b"r"), scope(b"B", b"r"), scope(b"D", b"r"));
        c.insert(&a, mac(1));
        c.insert(&b, mac(2));
        assert!(c.get(&a).is_some()); // b is now the older
        c.insert(&d, mac(3));
        assert_eq!(c.len(), 2);
        assert!(c.get(&a).is_some());
        assert!(c.get(&b).is_none());
        assert!(c.get(&d).is_some());
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn many_keys_never_exceed_capacity() {
        let mut c = SigningKeyCache::new(100);
        assert_eq!(c.capacity(), 128);
        let keys: Vec<String> = (0..1000).map(|i| format!("KEY{i}")).collect();
        for k in &keys {
            c.insert(&scope(k.as_bytes(), b"r"), mac(0));
        }
        assert!(c.len() <= 128);
        assert!(c.len() > 64, "sets are used evenly enough: {}", c.len());
    }
}
