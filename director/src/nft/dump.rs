//! `nft -j list table inet director` -> [`Ruleset`].
//!
//! The JSON schema is libnftables-json(5). Only what the director writes is
//! interpreted; anything else (a hand-added rule without a comment, an
//! element of an unexpected form) is still represented, so the diff sees it
//! and replaces or deletes it. Never panics on any input.

use super::model::{
    owner_of_name, owner_of_value, BaseChain, ChainObj, CounterVal, Elem, Owner, Rule, Ruleset,
    SetKind, SetObj, Shape,
};
use serde_json::Value;
use std::net::IpAddr;

/// Parses a dump. `Err` only when the text is not nft JSON at all.
pub fn parse(json: &str) -> Result<Ruleset, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| "no \"nftables\" array".to_string())?;
    let mut rs = Ruleset::default();
    let mut rules: Vec<(String, Rule)> = Vec::new();
    for item in items {
        let Some(obj) = item.as_object() else {
            continue;
        };
        for (kind, body) in obj {
            match kind.as_str() {
                "set" | "map" => {
                    if let Some((name, s)) = parse_set(kind == "map", body) {
                        rs.sets.insert(name, s);
                    }
                }
                "chain" => {
                    let Some(name) = body.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    let base = match (
                        body.get("type").and_then(Value::as_str),
                        body.get("hook").and_then(Value::as_str),
                    ) {
                        (Some(t), Some(h)) => Some(BaseChain {
                            kind: t.to_string(),
                            hook: h.to_string(),
                            prio: body
                                .get("prio")
                                .and_then(Value::as_i64)
                                .and_then(|p| i32::try_from(p).ok())
                                .unwrap_or(i32::MIN),
                            policy: body
                                .get("policy")
                                .and_then(Value::as_str)
                                .unwrap_or("accept")
                                .to_string(),
                        }),
                        _ => None,
                    };
                    rs.chains.insert(
                        name.to_string(),
                        ChainObj {
                            owner: owner_of_name(name),
                            base,
                            rules: Vec::new(),
                        },
                    );
                }
                "rule" => {
                    let Some(chain) = body.get("chain").and_then(Value::as_str) else {
                        continue;
                    };
                    rules.push((
                        chain.to_string(),
                        Rule {
                            comment: body
                                .get("comment")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                            text: body.get("expr").map(Value::to_string).unwrap_or_default(),
                            handle: body.get("handle").and_then(Value::as_u64),
                            fast: None,
                        },
                    ));
                }
                "counter" => {
                    let Some(name) = body.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    let val = CounterVal {
                        packets: body.get("packets").and_then(Value::as_u64).unwrap_or(0),
                        bytes: body.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                    };
                    rs.counters
                        .insert(name.to_string(), (owner_of_name(name), val));
                }
                _ => {}
            }
        }
    }
    // Rules are listed in chain order after all chains.
    for (chain, rule) in rules {
        if let Some(c) = rs.chains.get_mut(&chain) {
            c.rules.push(rule);
        }
    }
    Ok(rs)
}

/// A type field: a string (`"ipv4_addr"`, or `"a . b"` for typeof data) or
/// an array of names (concatenations).
fn type_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => Some(
            a.iter()
                .map(|x| x.as_str().unwrap_or("?").to_string())
                .collect::<Vec<_>>()
                .join(" . "),
        ),
        _ => None,
    }
}

fn parse_set(is_map: bool, body: &Value) -> Option<(String, SetObj)> {
    let name = body.get("name")?.as_str()?.to_string();
    let key = type_text(body.get("type")?)?;
    let data = if is_map {
        body.get("map").and_then(type_text)
    } else {
        None
    };
    let quote = data.as_deref() == Some("counter");
    let mut elements = std::collections::BTreeMap::new();
    let mut counters = std::collections::BTreeMap::new();
    if let Some(elems) = body.get("elem").and_then(Value::as_array) {
        for e in elems {
            let (k, v) = match (is_map, e) {
                (true, Value::Array(pair)) if pair.len() == 2 => {
                    (render(&pair[0]), render_data(&pair[1], quote))
                }
                _ => (render(e), String::new()),
            };
            if let Some(c) = e.get("elem").and_then(|x| x.get("counter")) {
                counters.insert(
                    k.clone(),
                    CounterVal {
                        packets: c.get("packets").and_then(Value::as_u64).unwrap_or(0),
                        bytes: c.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                    },
                );
            }
            // Counter sets: the key starts with the service (VIP . proto . port).
            let by_key = if name.starts_with('c') {
                counter_owner(&k)
            } else {
                None
            };
            // A service's own set owns its elements; in a shared map the
            // value says whose element it is (`jump svc_<id>`, counter name).
            let owner = match (owner_of_name(&name), by_key) {
                (Owner::Global, Some(o)) => o,
                (Owner::Global, None) if !v.is_empty() => owner_of_value(&v),
                (o, _) => o,
            };
            elements.insert(k, Elem { value: v, owner });
        }
    }
    let s = SetObj {
        kind: if is_map { SetKind::Map } else { SetKind::Set },
        owner: owner_of_name(&name),
        shape: Shape {
            key,
            data,
            timeout: body.get("timeout").and_then(Value::as_u64),
        },
        decl: String::new(),
        elements,
        dynamic: false,
        allowed_values: Vec::new(),
        follows: None,
        counters,
    };
    Some((name, s))
}

fn render_data(v: &Value, quote: bool) -> String {
    match (v, quote) {
        (Value::String(s), true) => format!("\"{s}\""),
        _ => render(v),
    }
}

/// One JSON value as canonical nft script text.
pub fn render(v: &Value) -> String {
    match v {
        Value::String(s) => match s.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => s.clone(),
        },
        Value::Number(n) => n.to_string(),
        Value::Array(a) => a.iter().map(render).collect::<Vec<_>>().join(", "),
        Value::Object(o) => {
            if let Some(c) = o.get("concat").and_then(Value::as_array) {
                return c.iter().map(render).collect::<Vec<_>>().join(" . ");
            }
            if let Some(e) = o.get("elem") {
                // {"elem": {"val": KEY, "timeout": .., "expires": ..}}
                return e.get("val").map(render).unwrap_or_default();
            }
            for verdict in ["jump", "goto"] {
                if let Some(t) = o.get(verdict).and_then(|j| j.get("target")) {
                    return format!("{verdict} {}", t.as_str().unwrap_or(""));
                }
            }
            if let Some(p) = o.get("prefix") {
                return format!(
                    "{}/{}",
                    p.get("addr").map(render).unwrap_or_default(),
                    p.get("len").map(render).unwrap_or_default()
                );
            }
            if let Some(Value::Array(r)) = o.get("range") {
                return r.iter().map(render).collect::<Vec<_>>().join("-");
            }
            if o.len() == 1 {
                if let Some((k, v)) = o.iter().next() {
                    if v.is_null() {
                        return k.clone();
                    }
                }
            }
            Value::Object(o.clone()).to_string()
        }
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
    }
}

/// The service of a counter-set key `VIP . proto . port . dest . dport`.
fn counter_owner(k: &str) -> Option<Owner> {
    let parts: Vec<&str> = k.split(" . ").collect();
    let ip: IpAddr = parts.first()?.parse().ok()?;
    let port: u16 = parts.get(2)?.parse().ok()?;
    let protocol = match *parts.get(1)? {
        "tcp" => crate::model::Protocol::Tcp,
        "udp" => crate::model::Protocol::Udp,
        "sctp" => crate::model::Protocol::Sctp,
        _ => return None,
    };
    Some(Owner::Service(super::model::service_id(
        &crate::model::ServiceKey::Inet {
            protocol,
            addr: std::net::SocketAddr::new(ip, port),
        },
    )))
}
