//! [`State::synthetic`]: a namespace of many files made quickly, for tests and benchmarks at
//! scale (`mfsha meta synth`, the snapshot measurements).

use crate::op::{Entry, Op};
use crate::state::State;
use mfsha_proto::types::{FileKind, Ino, Timestamp, ROOT_INO};

/// Files per directory of a synthetic namespace.
pub const SYNTHETIC_FILES_PER_DIR: u64 = 1000;

impl State {
    /// A state whose namespace holds `files` empty files, `/synth/dNNNN/fNNNN`
    /// ([`SYNTHETIC_FILES_PER_DIR`] per directory), made through [`State::apply`] exactly as
    /// a replica would make it, with every change already taken.
    pub fn synthetic(files: u64, now: Timestamp) -> State {
        let mut state = State::new(now);
        let top = synthetic_mkdir(&mut state, now, ROOT_INO, "synth".into());
        let mut dir = top;
        for i in 0..files {
            if i % SYNTHETIC_FILES_PER_DIR == 0 {
                let name = format!("d{:04}", i / SYNTHETIC_FILES_PER_DIR);
                dir = synthetic_mkdir(&mut state, now, top, name);
            }
            let op = Op::Create {
                parent: dir,
                name: format!("f{:04}", i % SYNTHETIC_FILES_PER_DIR),
                ino: state.next_free_ino(),
                kind: FileKind::File,
                mode: 0o644,
                umask: 0o022,
                uid: 0,
                gid: 0,
                rdev: 0,
            };
            synthetic_apply(&mut state, now, op);
            if i % 1024 == 0 {
                // Whoever stores the state writes every record; the change list would only grow.
                state.take_changes();
            }
        }
        state.take_changes();
        state
    }
}

fn synthetic_mkdir(state: &mut State, now: Timestamp, parent: Ino, name: String) -> Ino {
    let ino = state.next_free_ino();
    let op = Op::Mkdir { parent, name, ino, mode: 0o755, umask: 0o022, uid: 0, gid: 0 };
    synthetic_apply(state, now, op);
    ino
}

fn synthetic_apply(state: &mut State, now: Timestamp, op: Op) {
    let index = state.applied_index() + 1;
    let outcome = state.apply(index, &Entry { now, client: None, op });
    // Fresh names and inode numbers in directories made here: nothing can refuse them.
    assert!(outcome.is_ok(), "synthetic entry {index}: {outcome:?}");
}
