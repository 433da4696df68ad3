//! Physical diff: desired [`Ruleset`] vs dumped [`Ruleset`] -> nft commands.
//!
//! One command per line, each tagged with its owner, so nft's `line N`
//! error positions name the service at fault and a failed transaction can be
//! retried without it. Commands come in dependency order (nft checks
//! references inside the batch as it goes):
//!
//! 0. replace objects whose declaration changed (flush the chains that use
//!    them, delete, then re-add in 1 like a missing one);
//! 1. add missing sets, maps and counters; 2. add missing chains;
//! 3. delete stale or changed elements; 4. add missing or changed elements;
//! 5. rewrite chains whose rules differ (`flush chain` + `add rule`s);
//! 6. flush stale chains, delete stale sets, stale chains, stale counters.
//!
//! A map element whose value changes is deleted and re-added in the same
//! batch: `add element` of an existing key with other data is `EEXIST`
//! (nf_tables_api.c, nft_add_set_elem).

use super::exec::{FAMILY, TABLE};
use super::model::{ChainObj, Owner, Ruleset, SetKind, SetObj};
use super::nfnl::{ElemOp, FastCmd};
use std::collections::BTreeMap;

/// One line of a transaction script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub owner: Owner,
    pub text: String,
    /// What it does, for `PassReport::repairs`.
    pub what: String,
    /// The same command as an nf_tables netlink message, when the director
    /// can write it itself (element changes, the `rr`/`wrr` selector rule):
    /// a plan made only of these skips the nft CLI ([`super::nfnl`]).
    pub fast: Option<FastCmd>,
}

const T: &str = "inet director";

fn cmd(owner: &Owner, text: String, what: String) -> Cmd {
    Cmd {
        owner: owner.clone(),
        text,
        what,
        fast: None,
    }
}

fn with_fast(mut c: Cmd, fast: FastCmd) -> Cmd {
    c.fast = Some(fast);
    c
}

fn kind_word(k: SetKind) -> &'static str {
    match k {
        SetKind::Set => "set",
        SetKind::Map => "map",
    }
}

/// Whether a dumped rule refers to set `name` (`"@name"` in the JSON).
fn refers_to(rule_text: &str, name: &str) -> bool {
    let needle = format!("@{name}");
    rule_text.match_indices(&needle).any(|(i, _)| {
        let next = rule_text[i + needle.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '_')
    })
}

fn add_chain_text(name: &str, c: &ChainObj) -> String {
    match &c.base {
        Some(b) => format!(
            "add chain {T} {name} {{ type {} hook {} priority {}; policy {}; }}",
            b.kind, b.hook, b.prio, b.policy
        ),
        None => format!("add chain {T} {name}"),
    }
}

fn summarize(keys: &[&String]) -> String {
    let mut s: Vec<String> = keys.iter().take(3).map(|k| k.to_string()).collect();
    if keys.len() > 3 {
        s.push(format!("... {} more", keys.len() - 3));
    }
    s.join(", ")
}

/// How a chain whose rules differ is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleEdits {
    /// `flush chain` + `add rule`s: the cheap form for `nft -f` (a
    /// `replace rule ... handle` makes nft load every rule of the ruleset
    /// into its cache first: 3.8 s at 5,000 services, against 78 ms).
    Rewrite,
    /// `replace rule ... handle H` for just the rules that differ, when
    /// the handles are known: the form the netlink batch can carry.
    InPlace,
}

/// The commands that turn `have` into `want`, for `nft -f`. `want ==
/// None`: the table must not exist.
pub fn plan(want: Option<&Ruleset>, have: Option<&Ruleset>) -> Vec<Cmd> {
    plan_with(want, have, RuleEdits::Rewrite)
}

/// [`plan`] with a choice of how differing rules are rewritten.
pub fn plan_with(want: Option<&Ruleset>, have: Option<&Ruleset>, edits: RuleEdits) -> Vec<Cmd> {
    debug_assert_eq!(format!("{FAMILY} {TABLE}"), T);
    let g = Owner::Global;
    let Some(want) = want else {
        return match have {
            Some(_) => vec![cmd(
                &g,
                format!("delete table {T}"),
                format!("deleted table {T}"),
            )],
            None => Vec::new(),
        };
    };
    let mut out = Vec::new();
    let empty = Ruleset::default();
    // Borrowed: cloning a 5,000-service table costs more than the rest of
    // the diff; only a replacement (step 0) needs a modified copy.
    let mut have: std::borrow::Cow<'_, Ruleset> = match have {
        Some(h) => std::borrow::Cow::Borrowed(h),
        None => {
            out.push(cmd(
                &g,
                format!("add table {T}"),
                format!("created table {T}"),
            ));
            std::borrow::Cow::Owned(empty)
        }
    };

    // 0. Replace sets whose shape changed, chains whose hook changed.
    for (name, w) in &want.sets {
        let Some(h) = have.sets.get(name) else {
            continue;
        };
        if h.shape == w.shape && h.kind == w.kind {
            continue;
        }
        let have_kind = h.kind;
        let chains: Vec<String> = have
            .chains
            .iter()
            .filter(|(_, c)| c.rules.iter().any(|r| refers_to(&r.text, name)))
            .map(|(n, _)| n.clone())
            .collect();
        for c in chains {
            if let Some(ch) = have.to_mut().chains.get_mut(&c) {
                out.push(cmd(
                    &ch.owner,
                    format!("flush chain {T} {c}"),
                    format!("flushed chain {c} to replace {name}"),
                ));
                ch.rules.clear();
            }
        }
        out.push(cmd(
            &w.owner,
            format!("delete {} {T} {name}", kind_word(have_kind)),
            format!(
                "replaced {} {name} (declaration differed)",
                kind_word(w.kind)
            ),
        ));
        have.to_mut().sets.remove(name);
    }
    for (name, w) in &want.chains {
        let Some(h) = have.chains.get(name) else {
            continue;
        };
        if h.base == w.base {
            continue;
        }
        if !h.rules.is_empty() {
            out.push(cmd(
                &w.owner,
                format!("flush chain {T} {name}"),
                String::new(),
            ));
        }
        out.push(cmd(
            &w.owner,
            format!("delete chain {T} {name}"),
            format!("replaced chain {name} (hook differed)"),
        ));
        have.to_mut().chains.remove(name);
    }

    // 1. Missing sets and counters.
    for (name, w) in &want.sets {
        if !have.sets.contains_key(name) {
            out.push(cmd(
                &w.owner,
                format!("add {} {T} {name} {{ {} }}", kind_word(w.kind), w.decl),
                format!("created {} {name}", kind_word(w.kind)),
            ));
        }
    }
    for (name, (owner, _)) in &want.counters {
        if !have.counters.contains_key(name) {
            out.push(cmd(
                owner,
                format!("add counter {T} {name}"),
                format!("created counter {name}"),
            ));
        }
    }
    // 2. Missing chains.
    for (name, w) in &want.chains {
        if !have.chains.contains_key(name) {
            out.push(cmd(
                &w.owner,
                add_chain_text(name, w),
                format!("created chain {name}"),
            ));
        }
    }

    // 3./4. Elements.
    let mut dels = Vec::new();
    let mut adds = Vec::new();
    // Keys of dynamic maps that go (for the maps that follow them).
    let mut gone: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    let mut order: Vec<(&String, &SetObj)> = want
        .sets
        .iter()
        .filter(|(_, w)| w.follows.is_none())
        .collect();
    order.extend(want.sets.iter().filter(|(_, w)| w.follows.is_some()));
    for (name, w) in order {
        let hs = have.sets.get(name);
        let mut del: BTreeMap<Owner, Vec<&String>> = BTreeMap::new();
        let mut add: BTreeMap<Owner, Vec<(&String, &String)>> = BTreeMap::new();
        if let Some(h) = hs {
            for (k, he) in &h.elements {
                let stale = if let Some(leader) = &w.follows {
                    gone.get(leader).is_some_and(|g| g.contains(&k))
                        || have
                            .sets
                            .get(leader)
                            .is_none_or(|l| !l.elements.contains_key(k))
                } else if w.dynamic {
                    !w.allowed_values.contains(&he.value)
                } else {
                    w.elements.get(k).is_none_or(|we| we.value != he.value)
                };
                if stale {
                    if w.dynamic {
                        gone.entry(name).or_default().push(k);
                    }
                    let owner = w.elements.get(k).map_or(&he.owner, |we| &we.owner);
                    del.entry(owner.clone()).or_default().push(k);
                }
            }
        }
        if !w.dynamic {
            for (k, we) in &w.elements {
                let present = hs
                    .and_then(|h| h.elements.get(k))
                    .is_some_and(|he| he.value == we.value);
                if !present {
                    add.entry(we.owner.clone())
                        .or_default()
                        .push((k, &we.value));
                }
            }
        }
        // The set's declared types, for the netlink form: the kernel's
        // set (have) when it exists, else the one about to be created.
        let shape = hs.map_or(&w.shape, |h| &h.shape);
        let fast = |op: ElemOp, elems: Vec<(String, String)>| FastCmd::Elements {
            op,
            set: name.clone(),
            key_type: shape.key.clone(),
            data_type: shape.data.clone(),
            elems,
        };
        for (owner, keys) in del {
            let c = cmd(
                &owner,
                format!(
                    "delete element {T} {name} {{ {} }}",
                    keys.iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!(
                    "deleted {} element(s) of {name}: {}",
                    keys.len(),
                    summarize(&keys)
                ),
            );
            let elems = keys
                .iter()
                .map(|k| (k.to_string(), String::new()))
                .collect();
            dels.push(with_fast(c, fast(ElemOp::Delete, elems)));
        }
        for (owner, kvs) in add {
            let body: Vec<String> = kvs
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.to_string()
                    } else {
                        format!("{k} : {v}")
                    }
                })
                .collect();
            let keys: Vec<&String> = kvs.iter().map(|(k, _)| *k).collect();
            let c = cmd(
                &owner,
                format!("add element {T} {name} {{ {} }}", body.join(", ")),
                format!(
                    "added {} element(s) to {name}: {}",
                    keys.len(),
                    summarize(&keys)
                ),
            );
            let elems = kvs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            adds.push(with_fast(c, fast(ElemOp::Add, elems)));
        }
    }
    out.append(&mut dels);
    out.append(&mut adds);

    // 5. Rules, compared by their comments (their identity).
    for (name, w) in &want.chains {
        let have_rules = have
            .chains
            .get(name)
            .map(|c| c.rules.as_slice())
            .unwrap_or(&[]);
        let same = have_rules.len() == w.rules.len()
            && have_rules
                .iter()
                .zip(&w.rules)
                .all(|(h, r)| h.comment == r.comment);
        if same {
            continue;
        }
        // Same length, every kernel rule's handle known: replace only the
        // rules that differ, in place (the other rules, and the packets
        // they are matching, are not touched).
        let in_place = edits == RuleEdits::InPlace
            && !have_rules.is_empty()
            && have_rules.len() == w.rules.len()
            && have_rules.iter().all(|h| h.handle.is_some());
        if in_place {
            for (h, r) in have_rules.iter().zip(&w.rules) {
                let Some(handle) = h.handle.filter(|_| h.comment != r.comment) else {
                    continue;
                };
                let c = cmd(
                    &w.owner,
                    format!("replace rule {T} {name} handle {handle} {}", r.text),
                    format!(
                        "rewrote rule {} of chain {name}",
                        r.comment.as_deref().unwrap_or("")
                    ),
                );
                out.push(match &r.fast {
                    Some(rule) => with_fast(
                        c,
                        FastCmd::ReplaceRule {
                            chain: name.clone(),
                            handle,
                            rule: rule.clone(),
                        },
                    ),
                    None => c,
                });
            }
            continue;
        }
        if !have_rules.is_empty() {
            out.push(cmd(
                &w.owner,
                format!("flush chain {T} {name}"),
                String::new(),
            ));
        }
        for r in &w.rules {
            out.push(cmd(
                &w.owner,
                format!("add rule {T} {name} {}", r.text),
                format!(
                    "wrote rule {} of chain {name}",
                    r.comment.as_deref().unwrap_or("")
                ),
            ));
        }
    }

    // 6. Stale objects.
    for (name, h) in &have.chains {
        if !want.chains.contains_key(name) && !h.rules.is_empty() {
            out.push(cmd(
                &h.owner,
                format!("flush chain {T} {name}"),
                String::new(),
            ));
        }
    }
    for (name, h) in &have.sets {
        if !want.sets.contains_key(name) {
            out.push(stale_set(name, h));
        }
    }
    for (name, h) in &have.chains {
        if !want.chains.contains_key(name) {
            out.push(cmd(
                &h.owner,
                format!("delete chain {T} {name}"),
                format!("deleted chain {name}"),
            ));
        }
    }
    for (name, (owner, _)) in &have.counters {
        if !want.counters.contains_key(name) {
            out.push(cmd(
                owner,
                format!("delete counter {T} {name}"),
                format!("deleted counter {name}"),
            ));
        }
    }
    out
}

fn stale_set(name: &str, h: &SetObj) -> Cmd {
    cmd(
        &h.owner,
        format!("delete {} {T} {name}", kind_word(h.kind)),
        format!("deleted {} {name}", kind_word(h.kind)),
    )
}

/// The script of `cmds`: line `i + 1` is `cmds[i]`.
pub fn script(cmds: &[&Cmd]) -> String {
    let mut s = String::new();
    for c in cmds {
        s.push_str(&c.text);
        s.push('\n');
    }
    s
}
