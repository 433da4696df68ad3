//! A small, defensive HTTP/1.x response parser (RFC 9112), pure: bytes in,
//! head and body out. A checker talks to servers that may be broken or
//! hostile (garbage, endless headers, enormous bodies), so every limit is
//! explicit and every error names what was wrong.
//!
//! ```text
//! status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF   (RFC 9112 4)
//! *( field-line CRLF ) CRLF
//! message-body: Content-Length octets | chunked (RFC 9112 7.1) | until close
//! ```
//!
//! Requests are HTTP/1.0 with `Connection: close` (what keepalived's
//! HTTP_GET sends), so a conforming server never answers chunked (RFC 9112
//! 7.1: not to a 1.0 client) and closes after the response; chunked is
//! decoded anyway for servers that do it regardless.

/// Longest response head (status line + fields) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Longest body kept for a body check.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why a response was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("response head longer than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("malformed status line {0:?}")]
    StatusLine(String),
    #[error("malformed header line {0:?}")]
    HeaderLine(String),
    #[error("bad Content-Length {0:?}")]
    ContentLength(String),
    #[error("malformed chunk: {0}")]
    Chunk(&'static str),
    #[error("body longer than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("connection closed after {got} of {want} body bytes")]
    TruncatedBody { got: u64, want: u64 },
    #[error("connection closed inside a chunked body")]
    TruncatedChunked,
    #[error("connection closed before the response head was complete ({0} bytes)")]
    TruncatedHead(usize),
}

/// The parts of a response head a check looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
}

/// How the body ends (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// A short, printable excerpt of untrusted bytes for error messages.
fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(64)];
    String::from_utf8_lossy(cut).into_owned()
}

/// Parses the head if `buf` holds all of it: `Ok(Some((head, len)))` with
/// the head's length in bytes, `Ok(None)` if more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HttpError::HeadTooLarge);
        }
        // A status line that is already wrong fails now, not after 16 KiB.
        if let Some(line_end) = find(buf, b"\r\n") {
            parse_status_line(&buf[..line_end])?;
        } else if buf.len() >= 5 && !buf.starts_with(b"HTTP/") {
            return Err(HttpError::StatusLine(excerpt(buf)));
        }
        return Ok(None);
    };
    if end + 4 > MAX_HEAD_BYTES {
        return Err(HttpError::HeadTooLarge);
    }
    let mut lines = buf[..end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for line in lines {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| HttpError::HeaderLine(excerpt(line)))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(HttpError::HeaderLine(excerpt(line)));
        }
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| HttpError::ContentLength(excerpt(value)))?;
            // RFC 9112 6.3: differing lengths are unrecoverable.
            if length.is_some_and(|l| l != v) {
                return Err(HttpError::ContentLength(excerpt(value)));
            }
            length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        }
    }
    // RFC 9112 6.3: Transfer-Encoding overrides Content-Length; 1xx, 204
    // and 304 have no body.
    let framing = if matches!(status, 100..=199 | 204 | 304) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(l) = length {
        Framing::Length(l)
    } else {
        Framing::UntilClose
    };
    Ok(Some((ResponseHead { status, framing }, end + 4)))
}

fn parse_status_line(line: &[u8]) -> Result<u16, HttpError> {
    let bad = || HttpError::StatusLine(excerpt(line));
    let rest = line.strip_prefix(b"HTTP/1.").ok_or_else(bad)?;
    let (&minor, rest) = rest.split_first().ok_or_else(bad)?;
    if !minor.is_ascii_digit() {
        return Err(bad());
    }
    let rest = rest.strip_prefix(b" ").ok_or_else(bad)?;
    if rest.len() < 3 || (rest.len() > 3 && rest[3] != b' ') {
        return Err(bad());
    }
    let code = std::str::from_utf8(&rest[..3])
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(bad)?;
    Ok(code)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Incremental body decoder: feed what arrives, then [`BodyDecoder::finish`]
/// at end of stream. Keeps at most [`MAX_BODY_BYTES`].
#[derive(Debug)]
pub struct BodyDecoder {
    framing: Framing,
    body: Vec<u8>,
    /// Bytes of the body received so far (Length framing).
    received: u64,
    chunk: ChunkState,
    /// Undecoded chunked-framing bytes carried over between feeds.
    pending: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> BodyDecoder {
        BodyDecoder {
            framing,
            body: Vec::new(),
            received: 0,
            chunk: ChunkState::Size,
            pending: Vec::new(),
        }
    }

    /// Whether the body is complete without waiting for the close.
    pub fn is_complete(&self) -> bool {
        match self.framing {
            Framing::Length(l) => self.received >= l,
            Framing::Chunked => self.chunk == ChunkState::Done,
            Framing::UntilClose => false,
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<(), HttpError> {
        match self.framing {
            Framing::Length(l) => {
                let take = (l - self.received).min(data.len() as u64) as usize;
                self.received += take as u64;
                self.keep(&data[..take])
            }
            Framing::UntilClose => self.keep(data),
            Framing::Chunked => {
                let mut carried = std::mem::take(&mut self.pending);
                let data = if carried.is_empty() {
                    data
                } else {
                    carried.extend_from_slice(data);
                    &carried[..]
                };
                let used = self.feed_chunked(data)?;
                self.pending = data[used..].to_vec();
                if self.pending.len() > 4096 {
                    return Err(HttpError::Chunk("chunk-size or trailer line too long"));
                }
                Ok(())
            }
        }
    }

    /// Decodes as much of `data` as possible; returns the bytes used (the
    /// rest is an incomplete line, kept for the next feed).
    fn feed_chunked(&mut self, data: &[u8]) -> Result<usize, HttpError> {
        let mut at = 0;
        loop {
            match self.chunk {
                ChunkState::Done => return Ok(data.len()),
                ChunkState::Data(left) => {
                    let take = left.min((data.len() - at) as u64) as usize;
                    self.keep(&data[at..at + take])?;
                    at += take;
                    let left = left - take as u64;
                    if left > 0 {
                        self.chunk = ChunkState::Data(left);
                        return Ok(at);
                    }
                    self.chunk = ChunkState::DataEnd;
                }
                ChunkState::DataEnd => {
                    if data.len() - at < 2 {
                        return Ok(at);
                    }
                    if &data[at..at + 2] != b"\r\n" {
                        return Err(HttpError::Chunk("chunk data not followed by CRLF"));
                    }
                    at += 2;
                    self.chunk = ChunkState::Size;
                }
                ChunkState::Size | ChunkState::Trailer => {
                    let Some(nl) = find(&data[at..], b"\r\n") else {
                        return Ok(at);
                    };
                    let line = &data[at..at + nl];
                    at += nl + 2;
                    if self.chunk == ChunkState::Trailer {
                        if line.is_empty() {
                            self.chunk = ChunkState::Done;
                        }
                        continue;
                    }
                    // chunk-size [ chunk-ext ] (RFC 9112 7.1.1)
                    let size = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size.trim_ascii())
                        .ok()
                        .filter(|s| !s.is_empty() && s.len() <= 16)
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .ok_or(HttpError::Chunk("chunk-size is not a hex number"))?;
                    self.chunk = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
            }
        }
    }

    fn keep(&mut self, data: &[u8]) -> Result<(), HttpError> {
        if self.body.len() + data.len() > MAX_BODY_BYTES {
            return Err(HttpError::BodyTooLarge);
        }
        self.body.extend_from_slice(data);
        Ok(())
    }

    /// The body at end of stream; an error if the framing says more was due.
    pub fn finish(self) -> Result<Vec<u8>, HttpError> {
        match self.framing {
            Framing::Length(l) if self.received < l => Err(HttpError::TruncatedBody {
                got: self.received,
                want: l,
            }),
            Framing::Chunked if self.chunk != ChunkState::Done => Err(HttpError::TruncatedChunked),
            _ => Ok(self.body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(ResponseHead, usize)>, HttpError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn heads() {
        let (h, len) = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(len, 38);
        let (h, _) = head("HTTP/1.0 503\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.status, h.framing), (503, Framing::UntilClose));
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let (h, _) = head("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        // Incomplete, but good so far.
        assert_eq!(head("HTTP/1.1 200 OK\r\nServ").unwrap(), None);
        assert_eq!(head("HTT").unwrap(), None);
    }

    #[test]
    fn garbage_fails_early_with_an_excerpt() {
        for (text, want) in [
            ("SSH-2.0-OpenSSH_9.2\r\n", "SSH-2.0"),
            ("<html>", "<html>"),
            ("HTTP/1.1 2000 OK\r\n\r\n", "2000"),
            ("HTTP/1.1 099 x\r\n\r\n", "099"),
            ("HTTP/2 200\r\n\r\n", "HTTP/2"),
            ("HTTP/1.1 20x OK\r\n\r\n", "20x"),
        ] {
            let err = head(text).unwrap_err();
            assert!(
                matches!(&err, HttpError::StatusLine(e) if e.contains(want)),
                "{text:?}: {err}"
            );
        }
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"),
            Err(HttpError::HeaderLine(_))
        ));
        for cl in ["-1", "abc", "", "1 2", "99999999999999999999999"] {
            let text = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
            assert!(
                matches!(head(&text), Err(HttpError::ContentLength(_))),
                "{cl:?}"
            );
        }
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::ContentLength(_))
        ));
    }

    #[test]
    fn endless_headers_are_cut_at_the_limit() {
        let mut text = String::from("HTTP/1.1 200 OK\r\n");
        while text.len() <= MAX_HEAD_BYTES {
            text.push_str("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(head(&text), Err(HttpError::HeadTooLarge));
    }

    fn decode(framing: Framing, pieces: &[&[u8]]) -> Result<Vec<u8>, HttpError> {
        let mut d = BodyDecoder::new(framing);
        for p in pieces {
            d.feed(p)?;
        }
        d.finish()
    }

    #[test]
    fn bodies() {
        assert_eq!(
            decode(Framing::Length(5), &[b"hel", b"lo world"]).unwrap(),
            b"hello"
        );
        assert_eq!(
            decode(Framing::Length(5), &[b"hel"]),
            Err(HttpError::TruncatedBody { got: 3, want: 5 })
        );
        assert_eq!(decode(Framing::UntilClose, &[b"a", b"b"]).unwrap(), b"ab");
        // Chunked, split at every awkward place.
        let wire: &[u8] = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        for cut in 0..wire.len() {
            let got = decode(Framing::Chunked, &[&wire[..cut], &wire[cut..]]).unwrap();
            assert_eq!(got, b"hello world", "cut at {cut}");
        }
        assert_eq!(
            decode(Framing::Chunked, &[b"5\r\nhel"]),
            Err(HttpError::TruncatedChunked)
        );
        assert!(matches!(
            decode(Framing::Chunked, &[b"zz\r\n"]),
            Err(HttpError::Chunk(_))
        ));
        assert!(matches!(
            decode(Framing::Chunked, &[b"2\r\nabXX"]),
            Err(HttpError::Chunk(_))
        ));
    }

    #[test]
    fn enormous_bodies_stop_at_the_limit() {
        let mb = vec![b'x'; 64 * 1024];
        let mut d = BodyDecoder::new(Framing::UntilClose);
        let mut err = None;
        for _ in 0..20 {
            if let Err(e) = d.feed(&mb) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(HttpError::BodyTooLarge));
        let mut d = BodyDecoder::new(Framing::Chunked);
        assert!(
            d.feed(&vec![b'1'; 5000]).is_err(),
            "endless chunk-size line"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and byte flip of a few
        // responses goes through both parsers.
        let samples: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.0 301 Moved\r\nLocation: /x\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\n\r\n\xff\xfe\x00",
        ];
        for s in samples {
            for i in 0..s.len() {
                for flip in [0x00u8, 0x0a, 0x0d, 0x3a, 0xff] {
                    let mut v = s.to_vec();
                    v[i] = flip;
                    if let Ok(Some((h, len))) = parse_head(&v) {
                        let mut d = BodyDecoder::new(h.framing);
                        let _ = d.feed(&v[len..]);
                        let _ = d.finish();
                    }
                    let _ = parse_head(&v[..i]);
                }
            }
        }
    }
}
