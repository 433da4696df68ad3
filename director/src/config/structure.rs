//! Phase one's error reporting: turn a `toml`/serde error into one precise,
//! user-worded message.
//!
//! serde's messages name neither the key nor the table (`invalid type:
//! integer `5`, expected a string`). We know where the error is (toml gives a
//! byte span), so we parse the document once more into toml's spanned tree
//! (`DeTable`) and look up what sits at that span: the key that was unknown,
//! or the key whose value had the wrong type, and the table it lives in.

use serde_spanned::Spanned;
use std::ops::Range;
use toml::de::{DeTable, DeValue};

/// One structural error: byte span and message.
pub(crate) struct Structural {
    pub span: Range<usize>,
    pub message: String,
}

/// What the error span points at in the document tree.
struct Hit {
    /// Where the key is: `in [[virtual_server]]`, `at the top level`.
    table: String,
    key: String,
    /// The span is the key itself (unknown/duplicate key), not its value.
    on_key: bool,
    /// The value as found in the document (`integer 80`, `a table`), when
    /// the span is a value: more precise than serde's view (a datetime is a
    /// "map" to serde).
    found: Option<String>,
    /// TOML type of that value (`integer`, `table`, ...).
    found_type: &'static str,
}

/// Translate the TOML syntax errors (document did not parse) into the first
/// one by position: later ones are often consequences of it.
pub(crate) fn syntax_error(text: &str, errs: &[toml::de::Error]) -> Structural {
    let Some(err) = errs
        .iter()
        .min_by_key(|e| e.span().map(|s| s.start).unwrap_or(0))
    else {
        return Structural {
            span: 0..0,
            message: "TOML syntax error".to_string(),
        };
    };
    let span = err.span().unwrap_or(0..0);
    let raw = err.message();
    let message = if raw == "duplicate key" {
        let header = span.start > 0 && text.as_bytes().get(span.start - 1) == Some(&b'[');
        match text.get(span.clone()) {
            Some(k) if !k.is_empty() && header => format!("duplicate table \"{}\"", unquote(k)),
            Some(k) if !k.is_empty() => format!("duplicate key \"{}\"", unquote(k)),
            _ => "duplicate key".to_string(),
        }
    } else {
        format!("TOML syntax error: {}", raw.replace('`', "'"))
    };
    Structural { span, message }
}

/// The container kind each table-valued key must have. Checked on the
/// document tree *before* serde runs, because serde's derived structs also
/// accept a sequence of field values, so `[[global]]` or `health = [1]`
/// would otherwise fail deep inside with a misleading "expected a string".
enum Kind {
    Table(&'static [(&'static str, Kind)]),
    ArrayOfTables(&'static [(&'static str, Kind)]),
    /// `health`: one table, or an array of them.
    TableOrTables,
}

const TOP: &[(&str, Kind)] = &[
    (
        "global",
        Kind::Table(&[("ipvs_timeouts", Kind::Table(&[]))]),
    ),
    (
        "vrrp_instance",
        Kind::ArrayOfTables(&[
            ("track_interfaces", Kind::ArrayOfTables(&[])),
            ("track_scripts", Kind::ArrayOfTables(&[])),
            ("authentication", Kind::Table(&[])),
        ]),
    ),
    ("vrrp_script", Kind::ArrayOfTables(&[])),
    ("sync_group", Kind::ArrayOfTables(&[])),
    (
        "virtual_server",
        Kind::ArrayOfTables(&[
            ("health", Kind::TableOrTables),
            ("tunnel", Kind::Table(&[])),
            (
                "real_server",
                Kind::ArrayOfTables(&[
                    ("tunnel", Kind::Table(&[])),
                    ("health", Kind::TableOrTables),
                ]),
            ),
        ]),
    ),
    ("snat", Kind::ArrayOfTables(&[])),
    ("ctsync", Kind::Table(&[])),
];

/// Check that tables are tables and arrays of tables are arrays of tables;
/// the first violation by position, if any.
pub(crate) fn container_error(text: &str, tree: &Spanned<DeTable<'_>>) -> Option<Structural> {
    let mut found = Vec::new();
    check_kinds(text, tree.get_ref(), TOP, &mut found);
    found.into_iter().min_by_key(|s| s.span.start)
}

fn check_kinds(text: &str, table: &DeTable<'_>, spec: &[(&str, Kind)], out: &mut Vec<Structural>) {
    for (key, kind) in spec {
        let Some((_, v)) = table.iter().find(|(k, _)| k.get_ref() == key) else {
            continue;
        };
        match (kind, v.get_ref()) {
            (Kind::TableOrTables, DeValue::Table(_)) => {}
            (Kind::TableOrTables, DeValue::Array(items)) => {
                for item in items.iter() {
                    if !matches!(item.get_ref(), DeValue::Table(_)) {
                        out.push(Structural {
                            span: item.span(),
                            message: format!(
                                "invalid type: expected a table for each \"{key}\" entry, found {}",
                                shown(text, item)
                            ),
                        });
                    }
                }
            }
            (Kind::TableOrTables, _) => out.push(Structural {
                span: v.span(),
                message: format!(
                    "invalid type: expected a table or an array of tables for \"{key}\", found {}",
                    shown(text, v)
                ),
            }),
            (Kind::Table(sub), DeValue::Table(t)) => check_kinds(text, t, sub, out),
            (Kind::Table(_), _) => {
                // `[[x]]` headers: show the single-table header instead.
                let hint = match text.get(v.span()) {
                    Some(h) if h.starts_with("[[") && h.ends_with("]]") => {
                        let name: String = h[2..h.len() - 2]
                            .chars()
                            .filter(|c| !c.is_whitespace())
                            .collect();
                        format!(" (write [{name}], not [[{name}]])")
                    }
                    _ => String::new(),
                };
                out.push(Structural {
                    span: v.span(),
                    message: format!(
                        "invalid type: expected a table for \"{key}\", found {}{hint}",
                        shown(text, v)
                    ),
                });
            }
            (Kind::ArrayOfTables(sub), DeValue::Array(items)) => {
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::Table(t) => check_kinds(text, t, sub, out),
                        _ => out.push(Structural {
                            span: item.span(),
                            message: format!(
                                "invalid type: expected a table for each \"{key}\" entry, found {}",
                                shown(text, item)
                            ),
                        }),
                    }
                }
            }
            (Kind::ArrayOfTables(_), _) => {
                let hint = if matches!(v.get_ref(), DeValue::Table(_)) {
                    format!(" (write [[{key}]] for each entry)")
                } else {
                    String::new()
                };
                out.push(Structural {
                    span: v.span(),
                    message: format!(
                        "invalid type: expected an array of tables for \"{key}\", found {}{hint}",
                        shown(text, v)
                    ),
                });
            }
        }
    }
}

/// Translate a serde error raised while mapping the (syntactically valid)
/// document onto the raw structs.
pub(crate) fn shape_error(
    text: &str,
    tree: &Spanned<DeTable<'_>>,
    err: &toml::de::Error,
) -> Structural {
    let span = err.span().unwrap_or(0..0);
    let raw = err.message();
    let hit = find(text, tree, &span);
    let message = match hit {
        Some(hit) => describe(raw, &hit),
        None => tidy(raw),
    };
    Structural { span, message }
}

fn describe(raw: &str, hit: &Hit) -> String {
    if let Some(rest) = raw.strip_prefix("unknown field ") {
        let expected = rest.split_once(", expected ").map(|(_, e)| e).unwrap_or("");
        let names: Vec<String> = expected
            .split(['`'])
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s.to_string())
            .collect();
        let hint = suggest(&hit.key, &names)
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_default();
        let list = match names.len() {
            0 => "no keys here".to_string(),
            1 => format!("expected {}", names[0]),
            _ => format!("expected one of {}", names.join(", ")),
        };
        return format!("unknown key \"{}\" {}{hint}; {list}", hit.key, hit.table);
    }
    if hit.on_key {
        return format!("{} (key \"{}\" {})", tidy(raw), hit.key, hit.table);
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = raw.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.split_once(", expected ") {
                let expected = expected_words(expected);
                let found = hit.found.clone().unwrap_or_else(|| found_words(found));
                if expected == "an integer" && hit.found_type == "integer" {
                    // Valid TOML, but beyond i64.
                    return format!("{found} for \"{}\" is too large", hit.key);
                }
                let mut msg = format!(
                    "{prefix}expected {expected} for \"{}\", found {found}",
                    hit.key
                );
                if expected == "an array" && hit.found_type == "table" {
                    msg.push_str(&format!(" (write [[{}]] for each entry)", hit.key));
                }
                return msg;
            }
        }
    }
    format!("{} (for \"{}\" {})", tidy(raw), hit.key, hit.table)
}

/// serde's type names in TOML words.
fn expected_words(e: &str) -> String {
    if e.starts_with("struct ") {
        return "a table".to_string();
    }
    match e {
        "i64" | "u64" | "i32" | "u32" | "u16" | "u8" => "an integer".to_string(),
        "a sequence" => "an array".to_string(),
        "a boolean" => "a boolean (true or false)".to_string(),
        other => other.replace('`', "\""),
    }
}

fn found_words(f: &str) -> String {
    match f {
        "map" => "a table".to_string(),
        "sequence" => "an array".to_string(),
        other => other.replace('`', ""),
    }
}

/// serde/toml wording with backticks turned into quotes.
fn tidy(s: &str) -> String {
    s.replace('`', "\"")
}

fn unquote(k: &str) -> &str {
    k.trim().trim_matches('"').trim_matches('\'')
}

/// The closest known key, if it is plausibly a typo (edit distance <= 2).
fn suggest<'a>(key: &str, names: &'a [String]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (edit_distance(key, n), n))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.as_str())
}

/// Damerau-free Levenshtein distance with adjacent transpositions counted
/// as one edit (`shceduler` -> `scheduler` is 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// Find the key or value at `span`.
fn find(text: &str, tree: &Spanned<DeTable<'_>>, span: &Range<usize>) -> Option<Hit> {
    walk_table(text, tree.get_ref(), tree.span(), &mut Vec::new(), span)
}

fn walk_table(
    text: &str,
    table: &DeTable<'_>,
    table_span: Range<usize>,
    path: &mut Vec<String>,
    span: &Range<usize>,
) -> Option<Hit> {
    for (k, v) in table.iter() {
        if k.span() == *span {
            return Some(Hit {
                table: render(text, path, &table_span),
                key: k.get_ref().to_string(),
                on_key: true,
                found: None,
                found_type: "",
            });
        }
        if v.span() == *span {
            return Some(Hit {
                table: render(text, path, &table_span),
                key: k.get_ref().to_string(),
                on_key: false,
                found: Some(shown(text, v)),
                found_type: v.get_ref().type_str(),
            });
        }
        path.push(k.get_ref().to_string());
        let found = walk_value(text, v, k.get_ref(), &table_span, path, span);
        path.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}

fn walk_value(
    text: &str,
    v: &Spanned<DeValue<'_>>,
    key: &str,
    parent_span: &Range<usize>,
    path: &mut Vec<String>,
    span: &Range<usize>,
) -> Option<Hit> {
    match v.get_ref() {
        DeValue::Table(t) => walk_table(text, t, v.span(), path, span),
        DeValue::Array(items) => {
            for item in items.iter() {
                if item.span() == *span {
                    // An element of a plain array (`unicast_peers = [1]`):
                    // name the array's key.
                    let mut parent = path.clone();
                    parent.pop();
                    return Some(Hit {
                        table: render(text, &parent, parent_span),
                        key: key.to_string(),
                        on_key: false,
                        found: Some(shown(text, item)),
                        found_type: item.get_ref().type_str(),
                    });
                }
                let found = walk_value(text, item, key, parent_span, path, span);
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        _ => None,
    }
}

/// A value as a message shows it: `integer 80`, `string "x"`, `a table`;
/// long or multi-line scalars by type only.
fn shown(text: &str, v: &Spanned<DeValue<'_>>) -> String {
    match v.get_ref() {
        DeValue::Table(_) => "a table".to_string(),
        DeValue::Array(_) => "an array".to_string(),
        other => match text.get(v.span()) {
            Some(t) if t.chars().count() <= 40 && !t.contains('\n') => {
                format!("{} {t}", other.type_str())
            }
            _ => other.type_str().to_string(),
        },
    }
}

/// Where a table is, in messages: `in` its header as written when it has
/// one (`[global]`, `[[virtual_server.real_server]]`), else `in` its dotted
/// path (`virtual_server.health`), or `at the top level`.
fn render(text: &str, path: &[String], table_span: &Range<usize>) -> String {
    if path.is_empty() {
        return "at the top level".to_string();
    }
    if let Some(h) = text.get(table_span.clone()) {
        if h.starts_with('[') {
            let h: String = h.chars().filter(|c| !c.is_whitespace()).collect();
            return format!("in {h}");
        }
    }
    format!("in {}", path.join("."))
}
