use keepalive_tests::idle_scenario::CT_TIMEOUT_SECS;
use keepalive_tests::idle_scenario::play;
use keepalive_tests::middlebox::{Forgotten, Middlebox};

#[test]
fn tmp_mbx_oracle_drop() {
    keepalive_tests::require_root();
    let mb = Middlebox::new("mbxo", Forgotten::Drop, CT_TIMEOUT_SECS);
    let p = play(&mb, |_| {});
    eprintln!("{p:#?}");
    p.assert_consistent(Forgotten::Drop);
}

#[test]
fn tmp_mbx_oracle_reset() {
    keepalive_tests::require_root();
    let mb = Middlebox::new("mbxr", Forgotten::Reset, CT_TIMEOUT_SECS);
    let p = play(&mb, |_| {});
    eprintln!("{p:#?}");
    p.assert_consistent(Forgotten::Reset);
}
