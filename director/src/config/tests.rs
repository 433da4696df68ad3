use super::*;

fn err(text: &str) -> String {
    match parse(text, "t.toml") {
        Ok(c) => format!("OK {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn examples_parse() {
    for (name, text) in [
        ("director.toml", include_str!("../../../etc/director.toml")),
        (
            "keepalived-like-pair.toml",
            include_str!("../../../etc/keepalived-like-pair.toml"),
        ),
        ("ipv6.toml", include_str!("../../../etc/ipv6.toml")),
    ] {
        if let Err(e) = parse(text, name) {
            panic!("{e}");
        }
    }
    let _ = err("");
}
