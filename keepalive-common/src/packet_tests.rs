use super::*;
use crate::testframes::{Frame, Ip};

fn candidate(bytes: &[u8]) -> Segment {
    match parse_ethernet(&bytes) {
        Ok(Parsed::Candidate(s)) => s,
        other => panic!("expected a candidate, got {other:?}"),
    }
}

#[test]
fn zero_and_one_byte_ipv4_probes_parse() {
    let f = Frame::v4().seq(1000).ack(77).flags(TCP_ACK).window(501);
    let s = candidate(&f.build());
    assert_eq!((s.seq, s.ack, s.window, s.payload_len), (1000, 77, 501, 0));
    assert_eq!((s.sport, s.dport), (40000, 5432));
    assert_eq!(s.family, Family::Ipv4);
    assert_eq!(s.src[0].to_ne_bytes(), [192, 0, 2, 1]);
    assert_eq!(s.dst[0].to_ne_bytes(), [192, 0, 2, 2]);
    assert_eq!(s.src[1..], [0, 0, 0]);
    let s1 = candidate(&f.payload(&[0]).build());
    assert_eq!(s1.payload_len, 1);
}

#[test]
fn data_syn_and_no_ack_leave_early() {
    let data = Frame::v4()
        .flags(TCP_ACK | TCP_PSH)
        .payload(&[1, 2])
        .build();
    assert_eq!(parse_ethernet(&&data[..]), Ok(Parsed::NotCandidate));
    let syn = Frame::v4().flags(TCP_SYN).build();
    assert_eq!(parse_ethernet(&&syn[..]), Ok(Parsed::NotCandidate));
    let synack = Frame::v4().flags(TCP_SYN | TCP_ACK).build();
    assert_eq!(parse_ethernet(&&synack[..]), Ok(Parsed::NotCandidate));
    let zero_window_data = Frame::v4()
        .flags(TCP_ACK)
        .window(0)
        .payload(&[1, 2, 3])
        .build();
    assert!(matches!(
        parse_ethernet(&&zero_window_data[..]),
        Ok(Parsed::Candidate(_))
    ));
    let bare = Frame::v4().flags(0).build();
    assert_eq!(parse_ethernet(&&bare[..]), Ok(Parsed::NotCandidate));
}

#[test]
fn rst_and_fin_are_candidates_whatever_their_payload() {
    let rst = candidate(
        &Frame::v4()
            .flags(TCP_RST | TCP_ACK)
            .payload(&[9; 40])
            .build(),
    );
    assert_eq!(rst.payload_len, 40);
    let fin = candidate(
        &Frame::v4()
            .flags(TCP_FIN | TCP_ACK)
            .payload(&[9; 3])
            .build(),
    );
    assert!(fin.has(TCP_FIN));
}

#[test]
fn ipv6_with_extension_headers() {
    let f = Frame::v6().seq(5).flags(TCP_ACK);
    let s = candidate(&f.build());
    assert_eq!(s.family, Family::Ipv6);
    assert_eq!(s.src[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
    assert_eq!(s.dst[3].to_ne_bytes(), [0, 0, 0, 2]);
    let hbh = candidate(&f.hop_by_hop().payload(&[7]).build());
    assert_eq!((hbh.seq, hbh.payload_len), (5, 1));
    let frag = Frame::v6().flags(TCP_ACK).fragment_header().build();
    assert_eq!(parse_ethernet(&&frag[..]), Ok(Parsed::NotTcp));
}

#[test]
fn vlan_tags_and_ip_options_are_skipped() {
    let s = candidate(&Frame::v4().vlan(100).seq(42).flags(TCP_ACK).build());
    assert_eq!(s.seq, 42);
    let s = candidate(
        &Frame::v6()
            .vlan(100)
            .vlan(200)
            .seq(43)
            .flags(TCP_ACK)
            .build(),
    );
    assert_eq!(s.seq, 43);
    let s = candidate(
        &Frame::v4()
            .ip_options(8)
            .seq(44)
            .flags(TCP_ACK)
            .payload(&[1])
            .build(),
    );
    assert_eq!((s.seq, s.payload_len), (44, 1));
    let s = candidate(&Frame::v4().tcp_options(12).seq(45).flags(TCP_ACK).build());
    assert_eq!((s.seq, s.payload_len), (45, 0));
}

#[test]
fn ethernet_padding_is_not_payload() {
    let mut bytes = Frame::v4().flags(TCP_ACK).build();
    bytes.extend_from_slice(&[0; 6]); // 54-byte frame padded to the 60-byte minimum
    assert_eq!(candidate(&bytes).payload_len, 0);
}

#[test]
fn non_tcp_and_fragments_are_ignored() {
    let udp = Frame::v4().protocol(17).build();
    assert_eq!(parse_ethernet(&&udp[..]), Ok(Parsed::NotTcp));
    let arp = Frame::v4().ethertype(0x0806).build();
    assert_eq!(parse_ethernet(&&arp[..]), Ok(Parsed::NotTcp));
    let frag = Frame::v4().flags(TCP_ACK).ipv4_frag(0x2000).build();
    assert_eq!(parse_ethernet(&&frag[..]), Ok(Parsed::NotTcp));
    let later = Frame::v4().flags(TCP_ACK).ipv4_frag(0x0010).build();
    assert_eq!(parse_ethernet(&&later[..]), Ok(Parsed::NotTcp));
}

#[test]
fn truncated_frames_are_errors_at_every_cut() {
    // Cuts inside TCP options or the probe's payload byte too: the crafted-frames
    // integration test found those counted as probes before the whole-segment check.
    for f in [
        Frame::v4(),
        Frame::v6().hop_by_hop(),
        Frame::v4().vlan(3),
        Frame::v4().tcp_options(12),
        Frame::v6().tcp_options(12).payload(&[0]),
        Frame::v4().ip_options(8).tcp_options(8).payload(&[1]),
    ] {
        let full = f.flags(TCP_ACK).build();
        for cut in 12..full.len() {
            match parse_ethernet(&&full[..cut]) {
                Err(ParseError::Truncated) => {}
                other => panic!("cut at {cut} of {}: {other:?}", full.len()),
            }
        }
        assert!(matches!(
            parse_ethernet(&&full[..]),
            Ok(Parsed::Candidate(_))
        ));
    }
    assert_eq!(parse_ethernet(&&[0u8; 5][..]), Err(ParseError::Truncated));
}

#[test]
fn contradictory_lengths_are_malformed() {
    let mut b = Frame::v4().flags(TCP_ACK).build();
    b[14] = 0x44; // IHL 4 words: shorter than the minimum header
    assert_eq!(parse_ethernet(&&b[..]), Err(ParseError::Malformed));
    let mut b = Frame::v4().flags(TCP_ACK).build();
    b[14] = 0x65; // version 6 inside an IPv4 ethertype
    assert_eq!(parse_ethernet(&&b[..]), Err(ParseError::Malformed));
    let mut b = Frame::v4().flags(TCP_ACK).build();
    b[16..18].copy_from_slice(&30u16.to_be_bytes()); // tot_len below IP + TCP headers
    assert_eq!(parse_ethernet(&&b[..]), Err(ParseError::Malformed));
    let mut b = Frame::v4().flags(TCP_ACK).build();
    b[14 + 20 + 12] = 0xf0; // data offset 60 bytes: longer than the segment
    assert_eq!(parse_ethernet(&&b[..]), Err(ParseError::Malformed));
    let mut b = Frame::v4().flags(TCP_ACK).build();
    b[14 + 20 + 12] = 0x30; // data offset 12 bytes: below the minimum
    assert_eq!(parse_ethernet(&&b[..]), Err(ParseError::Malformed));
}

#[test]
fn big_tcp_lengths_mean_bulk_data() {
    let mut b = Frame::v4().flags(TCP_ACK).build();
    b[16..18].copy_from_slice(&0u16.to_be_bytes());
    assert_eq!(parse_ethernet(&&b[..]), Ok(Parsed::NotCandidate));
    let mut b = Frame::v6().flags(TCP_ACK).build();
    b[18..20].copy_from_slice(&0u16.to_be_bytes());
    assert_eq!(parse_ethernet(&&b[..]), Ok(Parsed::NotCandidate));
}

#[test]
fn ip_enum_covers_both_builders() {
    assert!(matches!(Frame::v4().ip, Ip::V4));
    assert!(matches!(Frame::v6().ip, Ip::V6));
}
