//! A strict reader of the Prometheus text exposition format (version
//! 0.0.4), for tests: what the `prometheus` crate's encoder writes is not
//! checked by that crate, and a scrape that Prometheus rejects loses every
//! series of the target, not just the bad one.
//!
//! Rules checked (from the format's documentation): metric and label name
//! syntax; label values quoted with only `\\`, `\"` and `\n` escapes;
//! sample values as Go floats; `# TYPE` at most once per family and before
//! its samples; `# HELP` at most once; a family's samples contiguous; no
//! duplicate series. Plus the conventions Prometheus relies on: counters
//! end in `_total` and are not negative; a histogram has, per label set,
//! buckets with increasing `le`, non-decreasing counts, a `+Inf` bucket
//! equal to `_count`, and a `_sum`.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name -> type.
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the one sample named `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}")),
    }
}

/// Labels between `{` and `}`; returns them and the rest after `}`.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = rest[..eq].trim();
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in label value")),
                },
                Some((_, '\n')) => return Err("raw newline in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// The family a sample belongs to: a histogram's `_bucket`, `_sum` and
/// `_count` samples belong to the declared histogram.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return base;
            }
        }
    }
    name
}

/// Parses and checks a whole exposition; the error names the line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut exp = Exposition::default();
    let mut helped = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeSet::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("exposition does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), _)
                    if !is_metric_name(name) || !helped.insert(name.to_string()) =>
                {
                    return Err(at("bad or repeated HELP".into()));
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_metric_name(name) {
                        return Err(at("bad metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if exp.types.contains_key(name) || exp.samples.iter().any(|s| s.name == name) {
                        return Err(at("TYPE repeated or after the family's samples".into()));
                    }
                    exp.types.insert(name.to_string(), kind.to_string());
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => parse_labels(after).map_err(at)?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| at(format!("timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &exp.types).to_string();
        if current.as_deref() != Some(family.as_str()) {
            if finished.contains(&family) {
                return Err(at(format!("samples of {family} are not contiguous")));
            }
            if let Some(prev) = current.take() {
                finished.insert(prev);
            }
            current = Some(family.clone());
        }
        if exp.types.get(&family).is_some_and(|t| t == "counter") {
            if !family.ends_with("_total") {
                return Err(at("counter name without _total".into()));
            }
            if value.is_nan() || value < 0.0 {
                return Err(at("negative counter".into()));
            }
        }
        if !series.insert((name.to_string(), labels.clone())) {
            return Err(at("duplicate series".into()));
        }
        exp.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&exp)?;
    Ok(exp)
}

/// A histogram's buckets per label set (without `le`): (le, count) in
/// order of appearance.
type BucketsByLabels = BTreeMap<Vec<(String, String)>, Vec<(f64, f64)>>;

fn check_histograms(exp: &Exposition) -> Result<(), String> {
    for (family, _) in exp.types.iter().filter(|(_, t)| *t == "histogram") {
        // Label set without `le` -> (le, cumulative count) in order.
        let mut buckets = BucketsByLabels::new();
        let key = |s: &Sample| -> Vec<(String, String)> {
            s.labels
                .iter()
                .filter(|(k, _)| *k != "le")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        for s in exp
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let le = s
                .labels
                .get("le")
                .ok_or_else(|| format!("{family}: bucket without le"))?;
            let le = parse_value(le)?;
            buckets.entry(key(s)).or_default().push((le, s.value));
        }
        if buckets.is_empty() {
            return Err(format!("{family}: histogram without buckets"));
        }
        for (labels, bs) in buckets {
            let find = |suffix: &str| {
                exp.samples
                    .iter()
                    .find(|s| s.name == format!("{family}{suffix}") && key(s) == labels)
                    .map(|s| s.value)
            };
            let count = find("_count").ok_or_else(|| format!("{family}: no _count"))?;
            find("_sum").ok_or_else(|| format!("{family}: no _sum"))?;
            for w in bs.windows(2) {
                if w[1].0 <= w[0].0 || w[1].1 < w[0].1 {
                    return Err(format!("{family}: buckets not cumulative: {bs:?}"));
                }
            }
            match bs.last() {
                Some((le, c)) if le.is_infinite() && *c == count => {}
                _ => return Err(format!("{family}: last bucket is not +Inf == _count")),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_format_and_reads_values() {
        let text = "# HELP a_total A thing.\n# TYPE a_total counter\na_total{x=\"q\\\"uote\\\\ \\n\"} 3\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\ng -1.5e-3 1700000000000\n";
        let exp = parse(text).unwrap();
        assert_eq!(exp.value("a_total", &[("x", "q\"uote\\ \n")]), Some(3.0));
        assert_eq!(exp.value("g", &[]), Some(-0.0015));
        assert_eq!(exp.types["h"], "histogram");
    }

    #[test]
    fn rejects_what_prometheus_would() {
        let bad = [
            ("1abc 1\n", "bad metric name"),
            ("a{1x=\"v\"} 1\n", "bad label name"),
            ("a{x=v} 1\n", "not quoted"),
            ("a{x=\"\\t\"} 1\n", "bad escape"),
            ("a{x=\"v\" 1\n", "expected ','"),
            ("a one\n", "value"),
            ("a 1\nb 1\na{x=\"y\"} 1\n", "not contiguous"),
            ("a 1\na 2\n", "duplicate"),
            ("a 1\n# TYPE a gauge\n", "after the family"),
            ("# TYPE a_total counter\na_total -1\n", "negative"),
            ("# TYPE a counter\na 1\n", "_total"),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
                "not cumulative",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 2\n",
                "+Inf == _count",
            ),
            ("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", "no _sum"),
            ("a 1", "newline"),
        ];
        for (text, why) in bad {
            let e = parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
