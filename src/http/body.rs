//! Following a message body that passes through unchanged: how many of the bytes seen so
//! far belong to it and whether it has ended, for every framing. The one place the
//! data path does body arithmetic (request bodies to the upstream, bodies of denied requests
//! being drained, response bodies to the client). Pure: no I/O, no allocation.

use super::{BodyFraming, ChunkError, ChunkedScanner};

/// Progress through one body; feed it the bytes that follow the head, in order, in any
/// pieces.
#[derive(Debug, Clone)]
pub struct BodyProgress {
    framing: BodyFraming,
    /// `Length` framing: bytes still to come.
    remaining: u64,
    chunks: ChunkedScanner,
}

impl BodyProgress {
    pub fn new(framing: BodyFraming) -> BodyProgress {
        BodyProgress {
            framing,
            remaining: match framing {
                BodyFraming::Length(n) => n,
                _ => 0,
            },
            chunks: ChunkedScanner::new(),
        }
    }

    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// The body has ended (a body that runs until close never does).
    pub fn is_done(&self) -> bool {
        match self.framing {
            BodyFraming::None => true,
            BodyFraming::Length(_) => self.remaining == 0,
            BodyFraming::Chunked => self.chunks.is_done(),
            BodyFraming::UntilClose => false,
        }
    }

    /// Consumes the next bytes; returns how many belong to the body (all of them unless it
    /// ends inside `bytes`; what follows is the next message).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        match self.framing {
            BodyFraming::None => Ok(0),
            BodyFraming::Length(_) => {
                let take = self.remaining.min(bytes.len() as u64);
                self.remaining -= take;
                Ok(take as usize)
            }
            BodyFraming::Chunked => self.chunks.feed(bytes),
            BodyFraming::UntilClose => Ok(bytes.len()),
        }
    }

    /// Like [`feed`](Self::feed), for a chunked body sent on without its chunk framing (to
    /// an HTTP/1.0 client, close-delimited): the chunk data among the consumed bytes is moved
    /// to the front of `bytes`. Returns (consumed, data bytes now at the front). Other
    /// framings pass through: the data is the consumed bytes.
    pub fn feed_unchunked(&mut self, bytes: &mut [u8]) -> Result<(usize, usize), ChunkError> {
        if self.framing == BodyFraming::Chunked {
            self.chunks.feed_data(bytes)
        } else {
            let n = self.feed(bytes)?;
            Ok((n, n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHUNKED: &[u8] = b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";

    #[test]
    fn each_framing_counts_its_bytes() {
        let mut none = BodyProgress::new(BodyFraming::None);
        assert!(none.is_done());
        assert_eq!(none.feed(b"GET"), Ok(0));

        let mut len = BodyProgress::new(BodyFraming::Length(5));
        assert!(!len.is_done());
        assert_eq!(len.feed(b"hel"), Ok(3));
        assert_eq!(len.feed(b"loNEXT"), Ok(2));
        assert!(len.is_done());
        assert_eq!(len.feed(b"more"), Ok(0));
        assert!(BodyProgress::new(BodyFraming::Length(0)).is_done());

        let mut ch = BodyProgress::new(BodyFraming::Chunked);
        assert_eq!(ch.feed(CHUNKED), Ok(CHUNKED.len() - 4));
        assert!(ch.is_done());

        let mut close = BodyProgress::new(BodyFraming::UntilClose);
        assert_eq!(close.feed(b"abc"), Ok(3));
        assert!(!close.is_done());
    }

    #[test]
    fn unchunked_keeps_only_the_data() {
        let mut b = BodyProgress::new(BodyFraming::Chunked);
        let mut buf = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nNEXT".to_vec();
        let (consumed, data) = b.feed_unchunked(&mut buf).unwrap();
        assert_eq!(consumed, buf.len() - 4);
        assert_eq!(&buf[..data], b"abcde");
        assert!(b.is_done());
    }

    proptest! {
        /// Any split of a body into pieces gives the same count and end as the whole.
        #[test]
        fn any_split_counts_like_the_whole(cuts in proptest::collection::vec(0usize..CHUNKED.len(), 0..8)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut b = BodyProgress::new(BodyFraming::Chunked);
            let mut plain = Vec::new();
            let mut u = BodyProgress::new(BodyFraming::Chunked);
            let mut taken = 0;
            let mut prev = 0;
            for &c in cuts.iter().chain(std::iter::once(&CHUNKED.len())) {
                taken += b.feed(&CHUNKED[prev..c]).unwrap();
                let mut piece = CHUNKED[prev..c].to_vec();
                let (_, d) = u.feed_unchunked(&mut piece).unwrap();
                plain.extend_from_slice(&piece[..d]);
                prev = c;
            }
            prop_assert_eq!(taken, CHUNKED.len() - 4);
            prop_assert!(b.is_done());
            prop_assert_eq!(&plain[..], b"hello");
        }
    }
}
