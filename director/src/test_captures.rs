//! Test support: the capture files the `testdata/capture.sh` scripts write
//! (via conntrack's `extract.py`): `## command`, then `> HEX` per netlink
//! message the tool sent, `< HEX` per message the kernel answered, and
//! `= line` per line the tool printed.

/// One command of a capture file.
pub struct Capture {
    pub cmd: String,
    pub sent: Vec<Vec<u8>>,
    pub got: Vec<Vec<u8>>,
    pub printed: Vec<String>,
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Every command of a capture file's text.
pub fn parse(text: &str) -> Vec<Capture> {
    let mut out: Vec<Capture> = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("## ") {
            out.push(Capture {
                cmd: c.to_string(),
                sent: vec![],
                got: vec![],
                printed: vec![],
            });
            continue;
        }
        let Some(cur) = out.last_mut() else {
            continue;
        };
        if let Some(h) = line.strip_prefix("> ") {
            cur.sent.push(unhex(h));
        } else if let Some(h) = line.strip_prefix("< ") {
            cur.got.push(unhex(h));
        } else if let Some(p) = line.strip_prefix("= ") {
            cur.printed.push(p.to_string());
        }
    }
    out
}
