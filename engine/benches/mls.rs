//! MLS cost of changing a group: the commit that adds one member to a 100-member group,
//! built by one member (with its welcome), and processed by another. Real openmls over
//! the real (in-memory) SQLite store, as the messenger does it.
//!
//! `cargo bench -p sotto-engine --bench mls` (figures in BENCHMARKS.md).

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sotto_engine::Identity;
use sotto_engine::messaging::{Conversations, GroupId};
use sotto_signaling::protocol::IdentityKey;

const MEMBERS: usize = 100;

fn person() -> Conversations {
    let identity = Identity::generate(None).expect("identity");
    Conversations::in_memory(Arc::new(identity)).expect("store")
}

fn package(of: &Conversations) -> (IdentityKey, Vec<u8>) {
    let (mut regular, _) = of.key_packages(1).expect("key package");
    (of.me(), regular.remove(0))
}

/// A group of `MEMBERS`: the creator and one other member hold full state.
fn group() -> (Conversations, Conversations, GroupId) {
    let creator = person();
    let other = person();
    let group = creator.create_room(None).expect("room");
    let mut packages = vec![package(&other)];
    packages.extend((2..MEMBERS).map(|_| package(&person())));
    let commit = creator.add(&group, &packages).expect("add 99");
    creator.commit_accepted(&commit).expect("merge");
    other
        .receive(commit.welcome.as_deref().expect("welcome"))
        .expect("join");
    (creator, other, group)
}

fn bench(c: &mut Criterion) {
    let (creator, other, group) = group();
    let mut g = c.benchmark_group("mls_100_members");
    g.sample_size(20);
    // Processing needs a fresh commit each time: build one per iteration (not timed),
    // let the other member process it (timed), and keep both in step. The member added
    // by the previous iteration is removed first (not timed), so the group stays at
    // 100 members however many iterations criterion runs.
    let mut last: Option<IdentityKey> = None;
    g.bench_function("process_add_commit", |b| {
        b.iter_batched(
            || {
                if let Some(previous) = last.take() {
                    let out = creator.remove(&group, &[previous]).expect("remove");
                    creator.commit_accepted(&out).expect("merge removal");
                    other.receive(&out.commit).expect("process removal");
                }
                let newcomer = package(&person());
                last = Some(newcomer.0);
                let out = creator.add(&group, &[newcomer]).expect("add");
                creator.commit_accepted(&out).expect("merge");
                out
            },
            |out| other.receive(&out.commit).expect("process"),
            BatchSize::PerIteration,
        )
    });
    if let Some(previous) = last.take() {
        let out = creator.remove(&group, &[previous]).expect("remove");
        creator.commit_accepted(&out).expect("merge removal");
        other.receive(&out.commit).expect("process removal");
    }
    assert_eq!(creator.members(&group).expect("members").len(), MEMBERS);
    // Built after the processing bench: every refused commit here advances the creator's
    // handshake ratchet in this epoch, and after a few hundred of them another member
    // would refuse the next one as "too far in the future".
    g.bench_function("build_add_commit", |b| {
        b.iter_batched(
            || package(&person()),
            |newcomer| {
                let out = creator.add(&group, &[newcomer]).expect("add");
                creator.commit_refused(&out).expect("clear");
                out.commit.len() + out.welcome.map_or(0, |w| w.len())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    let out = creator.add(&group, &[package(&person())]).expect("add");
    creator.commit_refused(&out).expect("clear");
    eprintln!(
        "sizes at {} members: commit {} B, welcome {} B",
        creator.members(&group).expect("members").len(),
        out.commit.len(),
        out.welcome.as_ref().map_or(0, Vec::len)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
