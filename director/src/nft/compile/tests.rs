use super::*;

#[test]
fn smooth_wrr_interleaves_and_keeps_proportions() {
    let seq = smooth_wrr(&[2, 1]);
    assert_eq!(seq, vec![0, 1, 0]);
    let seq = smooth_wrr(&[5, 3, 1]);
    assert_eq!(seq.len(), 9);
    for (i, w) in [5usize, 3, 1].iter().enumerate() {
        assert_eq!(seq.iter().filter(|&&x| x == i).count(), *w);
    }
    // Never more than two of the heaviest in a row.
    assert!(seq.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])));
    assert!(smooth_wrr(&[0, 0]).is_empty());
}

#[test]
fn wrr_weights_reduce_and_scale() {
    assert_eq!(wrr_weights(&[100, 300]), vec![1, 3]);
    let big = wrr_weights(&[1_000_000, 1]);
    assert!(big.iter().sum::<u64>() <= MAX_WRR_SLOTS + 1);
    assert_eq!(big[1], 1);
}

#[test]
fn spec_comment_round_trips() {
    let mut s = ServiceSettings::new("mh", Family::V6);
    s.flags = svc_flags::PERSISTENT | svc_flags::SCHED2;
    s.timeout = 360;
    s.netmask = 64;
    let c = spec_comment(&s);
    assert!(c.len() < 128, "nft comments are at most 128 bytes");
    assert_eq!(parse_spec_comment(&c), Some(s));
    assert_eq!(parse_spec_comment("director sched=rr"), None);
    assert_eq!(parse_spec_comment("something else"), None);
}

#[test]
fn masks() {
    assert_eq!(ipv4_mask(0xffff_ff00), "255.255.255.0");
    assert_eq!(ipv6_mask(64), "ffff:ffff:ffff:ffff::");
    assert_eq!(ipv6_mask(0), "::");
}
