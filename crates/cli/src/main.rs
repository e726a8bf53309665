//! `mfsha`: placeholder while the daemons are written.
fn main() {}
