//! HTTP/1.1 client side: a pure incremental response parser (head via `httparse`, bodies by
//! Content-Length, chunked or until-close), and [`Conn`], one keep-alive connection (TCP or TLS
//! through monoio-rustls) that writes prepared request bytes and reads whole responses. Error
//! bodies are read to the end so the connection stays in sync. Knows nothing about scenarios.

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::sync::Arc;

/// Response-side failures (transport or protocol). Small and allocation-free.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    #[error("connect failed")]
    Connect,
    #[error("TLS handshake failed")]
    Tls,
    #[error("write failed")]
    Write,
    #[error("read failed")]
    Read,
    #[error("connection closed before a complete response")]
    Eof,
    #[error("malformed response")]
    Malformed,
    #[error("response head too large")]
    HeadTooLarge,
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The parts of a response head the generator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub head_len: usize,
    pub body: BodyKind,
    pub close: bool,
    /// `Retry-After` in seconds, when present and numeric.
    pub retry_after_s: Option<u32>,
    /// `x-amz-retry-after` in milliseconds, when present.
    pub amz_retry_after_ms: Option<u32>,
}

pub const MAX_HEAD: usize = 64 * 1024;

fn num<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// Parses a response head at the start of `buf`. `Ok(None)` = need more bytes.
/// 1xx interim responses are skipped by the caller (they have no body).
pub fn parse_head(buf: &[u8], is_head_request: bool) -> Result<Option<Head>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err(ClientError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(_) => return Err(ClientError::Malformed),
    };
    let status = r.code.ok_or(ClientError::Malformed)?;
    let mut close = r.version == Some(0);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut retry_after_s = None;
    let mut amz_retry_after_ms = None;
    for h in r.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v: u64 = num(h.value).ok_or(ClientError::Malformed)?;
            if length.is_some_and(|l| l != v) {
                return Err(ClientError::Malformed);
            }
            length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for tok in h.value.split(|&b| b == b',') {
                let t = tok.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        } else if name.eq_ignore_ascii_case(b"retry-after") {
            retry_after_s = num(h.value);
        } else if name.eq_ignore_ascii_case(b"x-amz-retry-after") {
            amz_retry_after_ms = num(h.value);
        }
    }
    let body = if is_head_request || status / 100 == 1 || status == 204 || status == 304 {
        BodyKind::None
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(l) = length {
        if l == 0 {
            BodyKind::None
        } else {
            BodyKind::Length(l)
        }
    } else {
        close = true;
        BodyKind::UntilClose
    };
    Ok(Some(Head {
        status,
        head_len: n,
        body,
        close,
        retry_after_s,
        amz_retry_after_ms,
    }))
}

/// Incremental body consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyState {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Done,
}

impl BodyState {
    pub fn new(kind: BodyKind) -> Self {
        match kind {
            BodyKind::None => BodyState::Done,
            BodyKind::Length(n) => BodyState::Length(n),
            BodyKind::Chunked => BodyState::ChunkSize,
            BodyKind::UntilClose => BodyState::UntilClose,
        }
    }

    /// Consumes as much of `buf` as belongs to the body; returns (bytes consumed, body bytes range
    /// start/len pairs are not tracked — `on_data` sees the payload bytes).
    pub fn consume(
        &mut self,
        buf: &[u8],
        on_data: &mut impl FnMut(&[u8]),
    ) -> Result<usize, ClientError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match *self {
                BodyState::Done => return Ok(pos),
                BodyState::Length(n) => {
                    let take = (rest.len() as u64).min(n) as usize;
                    on_data(&rest[..take]);
                    pos += take;
                    *self = if n == take as u64 {
                        BodyState::Done
                    } else {
                        BodyState::Length(n - take as u64)
                    };
                    if *self != BodyState::Done {
                        return Ok(pos);
                    }
                }
                BodyState::UntilClose => {
                    on_data(rest);
                    return Ok(buf.len());
                }
                BodyState::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        pos += n;
                        *self = if size == 0 {
                            BodyState::Trailers
                        } else {
                            BodyState::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        if rest.len() > 1024 {
                            return Err(ClientError::Malformed);
                        }
                        return Ok(pos);
                    }
                    Err(_) => return Err(ClientError::Malformed),
                },
                BodyState::ChunkData(n) => {
                    let take = (rest.len() as u64).min(n) as usize;
                    on_data(&rest[..take]);
                    pos += take;
                    if take as u64 == n {
                        *self = BodyState::ChunkDataEnd;
                    } else {
                        *self = BodyState::ChunkData(n - take as u64);
                        return Ok(pos);
                    }
                }
                BodyState::ChunkDataEnd => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ClientError::Malformed);
                    }
                    pos += 2;
                    *self = BodyState::ChunkSize;
                }
                BodyState::Trailers => match rest.iter().position(|&b| b == b'\n') {
                    None => {
                        if rest.len() > 8192 {
                            return Err(ClientError::Malformed);
                        }
                        return Ok(pos);
                    }
                    Some(i) => {
                        let line = &rest[..i];
                        pos += i + 1;
                        if line.is_empty() || line == b"\r" {
                            *self = BodyState::Done;
                        }
                    }
                },
            }
        }
    }
}

/// A complete response as the generator records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub close: bool,
    pub slowdown: bool,
    pub retry_after_s: Option<u32>,
    pub amz_retry_after_ms: Option<u32>,
    pub body_bytes: u64,
}

/// Whether an error body names the S3 `SlowDown` code.
pub fn is_slowdown(body_prefix: &[u8]) -> bool {
    body_prefix
        .windows(b"<Code>SlowDown</Code>".len())
        .any(|w| w == b"<Code>SlowDown</Code>")
}

/// TLS settings for HTTPS targets.
#[derive(Clone)]
pub struct TlsSetup {
    pub connector: monoio_rustls::TlsConnector,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Client TLS for `server_name`, verified against `ca_file` (or not at all: `insecure`).
    pub fn new(
        ca_file: Option<&str>,
        insecure: bool,
        server_name: &str,
    ) -> Result<TlsSetup, String> {
        let cfg = tls_config(ca_file, insecure)?;
        let server_name = rustls_pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| e.to_string())?;
        Ok(TlsSetup {
            connector: monoio_rustls::TlsConnector::from(cfg),
            server_name,
        })
    }
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>),
}

impl Stream {
    async fn read<T: IoBufMut + 'static>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }
    async fn write_all<T: monoio::buf::IoBuf + 'static>(
        &mut self,
        buf: T,
    ) -> monoio::BufResult<usize, T> {
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Tls(s) => {
                let r = s.write_all(buf).await;
                if r.0.is_ok() {
                    if let Err(e) = s.flush().await {
                        return (Err(e), r.1);
                    }
                }
                r
            }
        }
    }
}

/// One keep-alive HTTP/1.1 connection with its read buffer (leftover bytes carry over, so
/// pipelined responses work).
pub struct Conn {
    stream: Stream,
    rbuf: Vec<u8>,
    pos: usize,
    pub requests: u64,
}

pub const READ_BUF: usize = 64 * 1024;
const BODY_PREFIX: usize = 1024;

impl Conn {
    pub async fn connect(addr: SocketAddr, tls: Option<&TlsSetup>) -> Result<Conn, ClientError> {
        let tcp = TcpStream::connect_addr(addr)
            .await
            .map_err(|_| ClientError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let stream = match tls {
            None => Stream::Tcp(tcp),
            Some(t) => Stream::Tls(Box::new(
                t.connector
                    .connect(t.server_name.clone(), tcp)
                    .await
                    .map_err(|_| ClientError::Tls)?,
            )),
        };
        Ok(Conn {
            stream,
            rbuf: Vec::with_capacity(READ_BUF),
            pos: 0,
            requests: 0,
        })
    }

    /// Writes `buf` fully; gives the buffer back for reuse.
    pub async fn write(&mut self, buf: Vec<u8>) -> (Result<(), ClientError>, Vec<u8>) {
        let (r, b) = self.stream.write_all(buf).await;
        (r.map(|_| ()).map_err(|_| ClientError::Write), b)
    }

    /// Writes a static byte slice (request bodies).
    pub async fn write_static(&mut self, buf: &'static [u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(buf)
            .await
            .0
            .map(|_| ())
            .map_err(|_| ClientError::Write)
    }

    async fn fill(&mut self) -> Result<usize, ClientError> {
        if self.pos > 0 && (self.pos == self.rbuf.len() || self.pos > READ_BUF / 2) {
            self.rbuf.drain(..self.pos);
            self.pos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(READ_BUF);
        }
        let len = self.rbuf.len();
        let buf = std::mem::take(&mut self.rbuf);
        let (r, slice) = self.stream.read(buf.slice_mut(len..)).await;
        self.rbuf = slice.into_inner();
        match r {
            Ok(n) => Ok(n),
            Err(_) => Err(ClientError::Read),
        }
    }

    /// Reads one whole response (skipping 1xx interim responses).
    pub async fn read_response(&mut self, is_head_request: bool) -> Result<Response, ClientError> {
        let head = loop {
            match parse_head(&self.rbuf[self.pos..], is_head_request)? {
                Some(h) if h.status / 100 == 1 && h.status != 101 => {
                    self.pos += h.head_len;
                }
                Some(h) => break h,
                None => {
                    if self.fill().await? == 0 {
                        return Err(ClientError::Eof);
                    }
                }
            }
        };
        self.pos += head.head_len;
        let mut state = BodyState::new(head.body);
        let keep_prefix = head.status >= 400;
        let mut prefix = [0u8; BODY_PREFIX];
        let mut prefix_len = 0usize;
        let mut body_bytes = 0u64;
        loop {
            let consumed = state.consume(&self.rbuf[self.pos..], &mut |d: &[u8]| {
                body_bytes += d.len() as u64;
                if keep_prefix && prefix_len < BODY_PREFIX {
                    let n = d.len().min(BODY_PREFIX - prefix_len);
                    prefix[prefix_len..prefix_len + n].copy_from_slice(&d[..n]);
                    prefix_len += n;
                }
            })?;
            self.pos += consumed;
            if state == BodyState::Done {
                break;
            }
            if self.fill().await? == 0 {
                if state == BodyState::UntilClose {
                    break;
                }
                return Err(ClientError::Eof);
            }
        }
        self.requests += 1;
        Ok(Response {
            status: head.status,
            close: head.close,
            slowdown: keep_prefix && is_slowdown(&prefix[..prefix_len]),
            retry_after_s: head.retry_after_s,
            amz_retry_after_ms: head.amz_retry_after_ms,
            body_bytes,
        })
    }
}

/// Builds a rustls client config: the test CA from `ca_file`, or no verification when `insecure`.
pub fn tls_config(
    ca_file: Option<&str>,
    insecure: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut cfg = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = ca_file {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{path}: {e}"))?;
            for c in certs {
                roots
                    .add(c.map_err(|e| format!("{path}: {e}"))?)
                    .map_err(|e| format!("{path}: {e}"))?;
            }
        }
        if roots.is_empty() {
            return Err("HTTPS target needs `ca_file` (a test CA) or `insecure = true`".into());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.body, BodyKind::Length(5));
        assert!(!h.close);
        assert_eq!(h.head_len, 38);
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyKind::None);
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false)
                .unwrap()
                .is_none()
        );
        let h = parse_head(
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nx-amz-retry-after: 2500\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.retry_after_s, Some(3));
        assert_eq!(h.amz_retry_after_ms, Some(2500));
        assert!(h.close);
        assert_eq!(h.body, BodyKind::Chunked);
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyKind::UntilClose);
        assert!(h.close);
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(parse_head(b"garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn chunked_bodies_incrementally() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut st = BodyState::new(BodyKind::Chunked);
            let mut got = Vec::new();
            let mut on = |d: &[u8]| got.extend_from_slice(d);
            let a = st.consume(&body[..split], &mut on).unwrap();
            let mut buf = body[a..].to_vec();
            let mut total = a;
            // feed the rest byte by byte to exercise partial states
            while st != BodyState::Done {
                let mut n = 1;
                loop {
                    let c = st.consume(&buf[..n.min(buf.len())], &mut on).unwrap();
                    if c > 0 || n >= buf.len() {
                        buf.drain(..c);
                        total += c;
                        break;
                    }
                    n += 1;
                }
            }
            assert_eq!(got, b"hello world", "split {split}");
            assert_eq!(&body[total..], b"NEXT");
        }
    }

    #[test]
    fn length_bodies_and_slowdown() {
        let mut st = BodyState::new(BodyKind::Length(4));
        let mut n = 0;
        assert_eq!(st.consume(b"ab", &mut |d| n += d.len()).unwrap(), 2);
        assert_eq!(st.consume(b"cdEF", &mut |d| n += d.len()).unwrap(), 2);
        assert_eq!(st, BodyState::Done);
        assert_eq!(n, 4);
        assert!(is_slowdown(b"<Error><Code>SlowDown</Code></Error>"));
        assert!(!is_slowdown(
            b"<Error><Code>ServiceUnavailable</Code></Error>"
        ));
    }
}
