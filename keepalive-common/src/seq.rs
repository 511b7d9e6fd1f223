//! TCP sequence-number arithmetic modulo 2^32 (RFC 9293 section 3.4).

/// `a` comes strictly before `b` in sequence space.
#[inline(always)]
pub const fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The later of two sequence numbers.
#[inline(always)]
pub const fn seq_max(a: u32, b: u32) -> u32 {
    if before(a, b) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_across_the_wrap() {
        assert!(before(u32::MAX, 0));
        assert!(before(u32::MAX - 5, 3));
        assert!(!before(3, u32::MAX - 5));
        assert!(!before(7, 7));
        assert_eq!(seq_max(u32::MAX, 1), 1);
        assert_eq!(seq_max(1, u32::MAX), 1);
        assert_eq!(seq_max(10, 20), 20);
    }
}
