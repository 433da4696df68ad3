//! What a check is: a validated, hashable description. Two real servers (or
//! two virtual servers sharing a real server) whose checks have equal
//! [`CheckSpec`]s share one running probe (see [`crate::runner`]), which is
//! why every field here is plain data with `Eq + Hash`: compiled regexes,
//! TLS configs and file contents are built from it by [`crate::probe`].

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One health check of one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CheckSpec {
    /// Where the probe connects (the real server, or the check's own
    /// `address`/`port` override). Scripts get it in their environment.
    pub target: SocketAddr,
    pub probe: Probe,
    /// Time between the starts of two probes (fixed rate, not fixed delay).
    pub interval: Duration,
    /// Limit for one whole probe: connect, TLS, request, response, script.
    pub timeout: Duration,
    /// Consecutive successes that bring a down server up.
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Probe {
    /// A TCP connect, then a reset (see `probe::tcp`).
    Tcp,
    Http(HttpProbe),
    Https {
        http: HttpProbe,
        tls: TlsProbe,
    },
    Script(ScriptProbe),
}

impl Probe {
    /// `tcp`, `http`, `https` or `script`: the metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Tcp => "tcp",
            Probe::Http(_) => "http",
            Probe::Https { .. } => "https",
            Probe::Script(_) => "script",
        }
    }
}

/// An HTTP/1.0 request and what its response must look like.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HttpProbe {
    /// `GET` unless configured otherwise.
    pub method: String,
    /// Request target, starting with `/`.
    pub path: String,
    /// `Host` header; the target address when unset.
    pub host: Option<String>,
    /// Accepted status codes; never empty (default 200-299).
    pub expect_status: Vec<StatusRange>,
    /// Optional check of the body.
    pub body: Option<BodyMatch>,
}

/// An inclusive range of HTTP status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    pub fn contains(&self, code: u16) -> bool {
        (self.low..=self.high).contains(&code)
    }

    /// Parses `200`, `200-399`; `None` if it is neither.
    pub fn parse(text: &str) -> Option<StatusRange> {
        let parse_code = |s: &str| -> Option<u16> {
            let v: u16 = s.trim().parse().ok()?;
            (100..=599).contains(&v).then_some(v)
        };
        match text.split_once('-') {
            Some((a, b)) => {
                let (low, high) = (parse_code(a)?, parse_code(b)?);
                (low <= high).then_some(StatusRange { low, high })
            }
            None => {
                let v = parse_code(text)?;
                Some(StatusRange { low: v, high: v })
            }
        }
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

/// How the response body is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyMatch {
    /// The body (as UTF-8, lossily) must contain a match of this regex.
    Regex(String),
    /// MD5 of the whole body, as keepalived's `HTTP_GET { url { digest } }`
    /// computes it (`genhash` prints it), so digests carry over.
    Md5([u8; 16]),
    Sha256([u8; 32]),
}

impl BodyMatch {
    /// A hex digest: 32 digits are MD5 (keepalived), 64 are SHA-256.
    pub fn digest_from_hex(hex: &str) -> Option<BodyMatch> {
        let bytes = decode_hex(hex)?;
        match bytes.len() {
            16 => bytes.try_into().ok().map(BodyMatch::Md5),
            32 => bytes.try_into().ok().map(BodyMatch::Sha256),
            _ => None,
        }
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.trim();
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// TLS settings of an `https` check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TlsProbe {
    /// Server name sent (SNI) and verified; the `Host`, else no SNI and
    /// the certificate is checked against the target IP.
    pub sni: Option<String>,
    /// Verify the certificate chain and name. Off: any certificate is
    /// accepted (what keepalived's SSL_GET does), the handshake must still
    /// complete.
    pub verify: bool,
    /// Trust anchors (PEM); the system store when unset.
    pub ca_file: Option<PathBuf>,
}

/// A command run with no shell; exit status 0 is up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScriptProbe {
    /// Program and arguments, passed as argv (never through a shell).
    pub argv: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        assert_eq!(
            StatusRange::parse("200"),
            Some(StatusRange {
                low: 200,
                high: 200
            })
        );
        assert_eq!(
            StatusRange::parse("200-399"),
            Some(StatusRange {
                low: 200,
                high: 399
            })
        );
        for bad in ["", "abc", "99", "600", "300-200", "200-", "2000"] {
            assert_eq!(StatusRange::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            StatusRange::parse("200-399").unwrap().to_string(),
            "200-399"
        );
    }

    #[test]
    fn digests_by_length() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        assert!(matches!(
            BodyMatch::digest_from_hex(md5),
            Some(BodyMatch::Md5(_))
        ));
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(
            BodyMatch::digest_from_hex(sha),
            Some(BodyMatch::Sha256(_))
        ));
        for bad in ["", "abc", "zz", &md5[..30], "é1"] {
            assert_eq!(BodyMatch::digest_from_hex(bad), None, "{bad:?}");
        }
    }
}
